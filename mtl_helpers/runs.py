"""Running an arm over seeds, reusing runs that another chapter already made, and rate sweeps.

An arm is a scenario trained once per seed. `run_seeds` stores each run's record under its key and
a fingerprint of everything the run depends on (`spec`, the splits it is scored on, the order of its
tasks); a later call with the same scenario, seed and fingerprint reuses the record instead of
training again, so chapters that need the same run share it. A run cut short is never saved or reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import MTLError
from .profiles import Profile
from .locations import results_dir
from .records import RunRecord, load_records, save_record

# Bump when a change to the package changes what a run computes. 2: the fingerprint holds the splits and the
# task order, and records name the examples they were scored on.
LOG = logging.getLogger("mtl_helpers.runs")
SPEC_VERSION = 2


def spec_hash(spec: dict) -> str:
    text = json.dumps({"spec": spec, "version": SPEC_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_fingerprint(spec: dict, splits: Sequence[str]) -> str:
    """What decides reuse: the spec, the splits a record must hold, and the order of the tasks when the spec
    maps them (`spec["tasks"]`; the hash sorts mapping keys, and the order of the tasks changes a run)."""
    tasks = spec.get("tasks") if isinstance(spec, dict) else None
    order = list(tasks) if isinstance(tasks, dict) else None
    return spec_hash({"spec": spec, "splits": sorted(set(splits)), "task_order": order})


def _holds(record: RunRecord, splits: Sequence[str]) -> bool:
    """Whether a stored record holds outcomes of each of its tasks on every requested split."""
    return all(task in record.outcomes.get(split, {}) for split in splits for task in record.tasks)


def check_writable(folder) -> None:
    """Raise, naming the folder and MTL_RESULTS_DIR, unless a record can be written into `folder`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise MTLError(
            f"The results folder {folder} cannot be written ({type(err).__name__}: {err.strerror or err}); "
            "nothing was trained. Set MTL_RESULTS_DIR to a folder you can write to."
        ) from None


def run_seeds(
    scenario: str,
    train: Callable[[int], object],
    seeds: Iterable[int],
    profile: Profile | str,
    spec: dict,
    splits: Sequence[str] = ("validation", "test"),
    reuse: bool = True,
    log: Callable[[str], None] | None = None,
    **extra,
) -> list[RunRecord]:
    """One record per seed of `scenario`: reused when a stored record has the same spec, splits and task
    order (and was not cut short), otherwise `train(seed)` runs (returning a Trainer, whose record is taken
    on `splits`, or a RunRecord) and its record is saved. A run cut short (Ctrl-C: `Trainer.fit` keeps the
    history and returns) is not saved and stops the loop with KeyboardInterrupt."""
    profile_name = profile if isinstance(profile, str) else profile.name
    log = log or LOG.info  # the runner's log, not the page: `logging.basicConfig(level=logging.INFO)` shows it
    fingerprint = run_fingerprint(spec, splits)
    stored = {
        r.seed: r
        for r in load_records(profile_name, scenario=scenario)
        if r.extra.get("spec_hash") == fingerprint and not r.interrupted and _holds(r, splits)
    }
    seeds = list(seeds)
    if not reuse or any(seed not in stored for seed in seeds):  # before training: not after an hour's run
        check_writable(results_dir(profile_name))
    records = []
    for seed in seeds:
        if reuse and seed in stored:
            records.append(stored[seed])
            log(f"{scenario}, seed {seed}: reused the stored run")
            continue
        started = time.perf_counter()
        made = train(seed)
        cut_short = made.interrupted if isinstance(made, RunRecord) else made.history.ever_interrupted
        if cut_short:
            raise KeyboardInterrupt(
                f"{scenario}, seed {seed}: the run was cut short, so nothing was saved for it and "
                "the later seeds were not run."
            )
        record = made if isinstance(made, RunRecord) else made.result(scenario, profile_name, splits)
        if record.seed != seed:
            raise MTLError(f"train({seed}) produced a run with seed {record.seed}; pass the seed into its TrainConfig.")
        record.extra.update(extra, spec=spec, spec_hash=fingerprint)
        save_record(record)
        records.append(record)
        log(f"{scenario}, seed {seed}: {time.perf_counter() - started:.0f} s")
    return records


def sweep_table(arms: dict[object, Sequence[RunRecord]], split: str = "validation") -> pd.DataFrame:
    """Mean validation metric of each swept value (over seeds and tasks), and which value is best."""
    rows = []
    for value, records in arms.items():
        if not records:
            raise MTLError(f"The sweep point {value!r} has no runs; give every point at least one run record.")
        per_task = {t: np.mean([r.metric(t, split) for r in records]) for t in records[0].tasks}
        rows.append(
            {"value": value, **per_task, "mean": float(np.mean(list(per_task.values()))), "seeds": len(records)}
        )
    # A point without a score must not be chosen (argmax picks NaN) nor silently skipped: the sweep would be smaller.
    unscored = [row["value"] for row in rows if math.isnan(row["mean"])]
    if unscored:
        raise MTLError(
            f"The sweep point(s) {', '.join(map(repr, unscored))} have no {split} score: their records lack "
            f"{split} scores of some task. Re-run them scored on {split!r} (or delete their records)."
        )
    frame = pd.DataFrame(rows)
    if all(isinstance(v, tuple) for v in frame["value"]):  # a grid over two knobs: one index level each
        frame.index = pd.MultiIndex.from_tuples(frame.pop("value"))
    else:
        frame = frame.set_index("value")
    best = frame["mean"].to_numpy().argmax()
    frame["chosen"] = [i == best for i in range(len(frame))]
    return frame


def chosen_value(table: pd.DataFrame):
    """The swept value with the best mean validation metric (plain Python numbers)."""
    chosen = table.index[table["chosen"].astype(bool)]
    if len(chosen) != 1 or math.isnan(table.loc[chosen[0], "mean"]):
        raise MTLError(
            "This sweep table has no chosen point with a score; build it with sweep_table from records "
            "scored on validation."
        )
    value = chosen[0]

    def plain(v):
        return v.item() if hasattr(v, "item") else v

    return tuple(plain(v) for v in value) if isinstance(value, tuple) else plain(value)
