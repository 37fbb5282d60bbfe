"""Loading a task: its rows from `sources`, split once under the leakage rule (`splits`, cached per
source files), then deterministic subsets of the sizes asked for."""

from __future__ import annotations

import copy
import numbers
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .errors import DataError
from .sources import HUB_MIRROR_ENV, find_data_dir, hub_dataset, hub_urls, load_hub, load_local, source_files
from .splits import Prepared, form_splits
from .tasks import SPLIT_SEED, TASKS, TaskData, TaskSpec, task_spec


# ---------------------------------------------------------------- loading a task

_CACHE: OrderedDict[tuple, Prepared] = OrderedDict()
_CACHE_SIZE = 16  # forming SST-2's splits takes seconds; notebooks and tests load the same task many times


def _cached(key: tuple, make: Callable[[], Prepared]) -> Prepared:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    _CACHE[key] = prepared = make()
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return prepared


def _stamp(paths: Iterable[Path]) -> tuple:
    """Identity of files' current contents, cheaply: path, size and modification time."""
    return tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def _prepare(spec: TaskSpec, raw: dict[str, list[dict]], source: str) -> Prepared:
    for split, src in spec.files.items():
        if src is not None and not raw[src]:
            raise DataError(
                f"{spec.name} {split} split is empty: the {src} source has no rows. Re-copy the data files."
            )
    splits, report = form_splits(spec, raw)
    return Prepared(splits, list(spec.label_names), source, report)


def _full_splits(spec: TaskSpec, data_dir: str | os.PathLike | None) -> Prepared:
    root, how = find_data_dir(data_dir)
    folder = root / spec.name if root is not None else None
    if folder is not None and folder.is_dir():
        files = [folder / "features.json", *source_files(folder, spec).values()]
        key = (repr(spec), _stamp(p for p in files if p.exists()))
        return _cached(key, lambda: _prepare(spec, load_local(folder, spec), "local JSON Lines"))
    urls = hub_urls(spec)
    mirror = os.environ.get(HUB_MIRROR_ENV)
    key = (repr(spec), tuple(urls.values()), _stamp(Path(u) for u in urls.values() if mirror and Path(u).exists()))
    where = f"{'the hub mirror' if mirror else 'the Hugging Face hub'} ({spec.hub_id}@{spec.hub_revision[:7]})"
    return _cached(key, lambda: _prepare(spec, load_hub(spec, _fetch_hub(spec, folder, how)), where))


def _fetch_hub(spec: TaskSpec, folder: Path | None, how: str):
    """The pinned parquet files, or an error that says where the loader looked and how to fix it."""
    try:
        return hub_dataset(spec)
    except DataError:
        raise
    except Exception as err:
        mirror = os.environ.get(HUB_MIRROR_ENV)
        looked = (
            f"{folder} (found through {how})"
            if folder is not None
            else (
                f"no local folder ({how})"
                if mirror
                else "no local folder (none given by data_dir, MTL_DATA_DIR, or a shared/data beside the repository)"
            )
        )
        problem = f"{type(err).__name__}: {str(err).splitlines()[0].rstrip('.') if str(err) else ''}"
        if mirror:
            fix = f"Put the files at {', '.join(hub_urls(spec).values())}, or unset {HUB_MIRROR_ENV}."
            hub = f"the hub mirror in {HUB_MIRROR_ENV} ({spec.hub_id})"
        else:
            fix = (
                f"Set MTL_DATA_DIR to a folder holding {spec.name}/<split>.jsonl and {spec.name}/features.json "
                f"(python scripts/fetch_data.py DIR writes one wherever the hub is reachable), or go online."
            )
            hub = f"the Hugging Face hub ({spec.hub_id})"
        raise DataError(f"Could not load task {spec.name!r}. Looked in {looked}, then {hub}: {problem}. {fix}") from err


def _check_count(value: object, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(
            f"{what}: expected a whole number of rows or None (all rows), got {value!r} ({type(value).__name__}). Pass "
            "an int such as 500, or None."
        )
    if value < 1:
        raise DataError(
            f"{what}: a subset needs at least 1 row, got {value}. Pass a positive whole number, or None for all rows."
        )


def _subset(rows: list[dict], n: int | None, what: str) -> list[dict]:
    if n is None:
        return rows
    if n > len(rows):
        raise DataError(
            f"{what}: asked for {n} rows but only {len(rows)} exist. Ask for at most {len(rows)}, or None for all."
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))[:n]
    return [rows[i] for i in sorted(order)]


def _copy_row(row: dict) -> dict:
    # rows are shared with the cache: a caller that edits its rows must not change later loads
    return {k: list(v) if isinstance(v, list) else v for k, v in row.items()}


def load_task(
    name: str,
    max_train: int | None = None,
    max_eval: int | None = None,
    data_dir: str | os.PathLike | None = None,
    max_test: int | None | str = "max_eval",
) -> TaskData:
    """Load a task by name with fixed, leak-free train/validation/test splits and deterministic subsets.

    Looks in `data_dir`, then MTL_DATA_DIR, then a shared/data folder beside the repository, then
    the pinned parquet files on the Hugging Face hub (or the MTL_HUB_MIRROR folder). Held-out splits
    share no text with train (see SHARED_TEXT_RULE; token tasks: DUPLICATE_RULE); `split_report`
    says what was held out and dropped. `max_train` and `max_eval` then take nested random subsets;
    `max_test` caps the test split apart from validation (by default it follows `max_eval`; None keeps
    every test row, as the book's verdicts do).
    """
    spec = task_spec(name)
    _check_count(max_train, f"{name} train (max_train)")
    _check_count(max_eval, f"{name} validation and test (max_eval)")
    if max_test == "max_eval":
        max_test = max_eval
    _check_count(max_test, f"{name} test (max_test)")
    full = _full_splits(spec, data_dir)
    splits = {"train": _subset(full.splits["train"], max_train, f"{name} train (max_train)")}
    for split, cap, knob in (("validation", max_eval, "max_eval"), ("test", max_test, "max_test")):
        rows = full.splits[split]
        splits[split] = _subset(rows, min(cap, len(rows)) if cap is not None else None, f"{name} {split} ({knob})")
    splits = {s: [_copy_row(r) for r in rows] for s, rows in splits.items()}
    return TaskData(name, spec.level, list(full.label_names), splits, full.source, spec, copy.deepcopy(full.report))


def split_table(names: Iterable[str] | None = None, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per task and held-out split: its size and origin, and the training rows that shared
    text with it before pruning and after (always 0). `pandas.DataFrame(split_table())` shows it."""
    table = []
    for name in names or TASKS:
        report = load_task(name, data_dir=data_dir).split_report
        for split in ("validation", "test"):
            before, after = report[split]["overlap_before"], report[split]["overlap_after"]
            table.append(
                {
                    "task": name,
                    "split": split,
                    "rows": report[split]["rows"],
                    "from": report[split]["from"],
                    "heldout_in_train": before["heldout_in_train"],
                    "train_in_heldout": before["train_in_heldout"],
                    "train_rows_dropped": before["train_rows"],
                    "train_rows_after": after["train_rows"],
                    "train_rows_kept": report["train_rows"],
                    "train_source_rows": report["train_source_rows"],
                }
            )
    return table
