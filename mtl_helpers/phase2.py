"""Chapter 4's experiment, which chapter 11 repeats with adapters: after a joint run (phase 1), Task B
trains alone (phase 2) on rows phase 1 never saw, while Task A is measured along the way. The rows of
phase 2, and Task A's path through it as a frame of seeds and points, are built here once for both."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pandas as pd

from .arms import load_tasks
from .callbacks import History
from .errors import MTLError
from .profiles import Profile
from .records import RunRecord
from .tasks import TaskData


def unseen_rows(task: TaskData, rows: int | None, profile: Profile) -> tuple[TaskData, bool]:
    """`task` with `rows` training rows (None: all) that its own training split does not hold: the next
    rows of the same nested random order that `load_task` draws from, with the profile's evaluation
    splits. The flag says whether any were left; when none are (the task already holds every training
    row), `task` itself comes back with False, and phase 2 retrains on rows phase 1 saw."""
    if rows is not None and (isinstance(rows, bool) or not isinstance(rows, int) or rows < 1):
        raise MTLError(f"unseen_rows(rows={rows!r}): give a whole number of rows >= 1, or None for all.")
    seen = {str(r["text"]) for r in task.splits["train"]}
    (whole,) = load_tasks([task.name], profile, max_train=None)
    total = len(whole.splits["train"])
    want = None if rows is None else min(total, len(seen) + rows)
    (more,) = load_tasks([task.name], profile, max_train=want)
    fresh = [r for r in more.splits["train"] if str(r["text"]) not in seen]
    if not fresh:
        return task, False
    unseen = copy.copy(more)
    unseen.splits = {**more.splits, "train": fresh[:rows] if rows else fresh}
    return unseen, True


def curve_points(history: History, task: str, metric: str, rows_per_epoch: int) -> list[dict]:
    """Task `task`'s scores in `history` (an `Evaluation` callback's), one point each, at the number of
    training rows seen so far: at epoch e of a phase that trains on `rows_per_epoch` rows, e times that."""
    return [
        {"epoch": e["epoch"], "b_examples": round(e["epoch"] * rows_per_epoch), metric: e[metric]}
        for e in history.evals
        if e["task"] == task
    ]


def curve_frame(
    before: Sequence[RunRecord], after: Sequence[RunRecord], task: str, metric: str, split: str = "validation"
) -> pd.DataFrame:
    """Task `task` along phase 2, one row per seed and point: the phase-1 record of the seed (`before`)
    is the point at 0 rows, then the points its phase-2 record (`after`) keeps in `extra["curve"]`.
    Seeds are matched by number; a seed with no phase-1 record is an error, not a gap."""
    start = {r.seed: r for r in before}
    missing = sorted({r.seed for r in after} - set(start))
    if missing:
        raise MTLError(f"curve_frame: no phase-1 record for seed(s) {missing}; run phase 1 for them first.")
    rows = []
    for run in after:
        if "curve" not in run.extra:
            raise MTLError(
                f"The record of {run.scenario!r}, seed {run.seed}, keeps no curve (extra['curve']): it was "
                "trained without an Evaluation callback. Delete it and run its chapter again."
            )
        rows.append({"seed": run.seed, "b_examples": 0, metric: start[run.seed].metric(task, split)})
        rows += [{"seed": run.seed, "b_examples": p["b_examples"], metric: p[metric]} for p in run.extra["curve"]]
    return pd.DataFrame(rows, columns=["seed", "b_examples", metric])
