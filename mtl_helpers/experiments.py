"""Running an arm over seeds, reusing runs that another chapter already made, and rate sweeps.

An arm is a scenario trained once per seed. `run_seeds` stores each run's record under its key and
a fingerprint of everything the run depends on (`spec`); a later call with the same scenario, seed
and spec reuses the record instead of training again, so chapters that need the same run share it.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .errors import MTLError
from .profiles import Profile
from .results import RunRecord, load_records, save_record

SPEC_VERSION = 1  # bump when a change to the package changes what a run computes


def spec_hash(spec: dict) -> str:
    text = json.dumps({"spec": spec, "version": SPEC_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_seeds(scenario: str, train: Callable[[int], object], seeds: Iterable[int], profile: Profile | str, spec: dict,
              splits: Sequence[str] = ("validation", "test"), reuse: bool = True, log: Callable[[str], None] | None = print,
              **extra) -> list[RunRecord]:
    """One record per seed of `scenario`: reused when a stored record has the same spec, otherwise
    `train(seed)` runs (returning a Trainer, whose record is taken on `splits`, or a RunRecord) and
    its record is saved."""
    profile_name = profile if isinstance(profile, str) else profile.name
    fingerprint = spec_hash(spec)
    stored = {r.seed: r for r in load_records(profile_name, scenario=scenario) if r.extra.get("spec_hash") == fingerprint}
    records = []
    for seed in seeds:
        if reuse and seed in stored:
            records.append(stored[seed])
            if log:
                log(f"{scenario}, seed {seed}: reused the stored run")
            continue
        started = time.perf_counter()
        made = train(seed)
        record = made if isinstance(made, RunRecord) else made.result(scenario, profile_name, splits)
        if record.seed != seed:
            raise MTLError(f"train({seed}) produced a run with seed {record.seed}; pass the seed into its TrainConfig.")
        record.extra.update(extra, spec=spec, spec_hash=fingerprint)
        save_record(record)
        records.append(record)
        if log:
            log(f"{scenario}, seed {seed}: {time.perf_counter() - started:.0f} s")
    return records


def sweep_table(arms: dict[object, Sequence[RunRecord]], split: str = "validation") -> pd.DataFrame:
    """Mean validation metric of each swept value (over seeds and tasks), and which value is best."""
    rows = []
    for value, records in arms.items():
        per_task = {t: np.mean([r.metric(t, split) for r in records]) for t in records[0].tasks}
        rows.append({"value": value, **per_task, "mean": float(np.mean(list(per_task.values()))), "seeds": len(records)})
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
    value = table.index[table["chosen"]][0]
    plain = lambda v: v.item() if hasattr(v, "item") else v  # noqa: E731
    return tuple(plain(v) for v in value) if isinstance(value, tuple) else plain(value)
