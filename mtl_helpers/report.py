"""How the chapters write numbers: means over seeds with their spread, comparisons with their
interval, rates, and the accuracy table of several arms. Defined once here, so every page says a
number the same way (d2l's `#@save` helpers, kept in the package)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .records import RunRecord
from .stats import MARGIN, Comparison, summarize


def sd(values: Iterable[float]) -> float:
    """The standard deviation between seeds (n - 1 in the denominator); 0 for a single value."""
    values = np.asarray(list(values), dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def mean_sd(values: Iterable[float], percent: bool = True) -> str:
    """A metric's mean over seeds and its spread: '85.3% ± 1.2' (the spread in points; one seed:
    '85.3%'). `percent=False` leaves out the % sign, for table cells under a '%' header."""
    values = 100 * np.asarray(list(values), dtype=float)
    mean = f"{values.mean():.1f}{'%' if percent else ''}"
    return f"{mean} ± {sd(values):.1f}" if len(values) > 1 else mean


def arm_mean_sd(
    records: Sequence[RunRecord], split: str = "test", task: str | None = None, percent: bool = True
) -> str:
    """`mean_sd` of an arm's runs: one task's primary metric, or (task None) the mean over its tasks."""
    return mean_sd([r.metric(task, split) if task else r.mean_metric(split) for r in records], percent)


def interval(c: Comparison) -> str:
    """A comparison in points, short: '+2.3 (+0.8 to +3.9)'."""
    return f"{100 * c.effect:+.1f} ({100 * c.low:+.1f} to {100 * c.high:+.1f})"


def noise(c: Comparison) -> str:
    """What the noise rule says of a comparison, in words: one of its four outcomes. An interval that
    holds zero and large effects is unresolved, never "the same"."""
    if c.outcome in ("higher", "lower"):
        return "beyond the noise"
    if c.outcome == "equivalent":
        return f"equivalent (within ±{100 * MARGIN:.0f} points)"
    return "unresolved"


def rate(x: float) -> str:
    """A learning rate as people write it: 1e-4, 3e-5 (not 1e-04)."""
    return f"{x:.0e}".replace("e-0", "e-").replace("e+0", "e")


def accuracy_table(
    arms: Mapping[str, Sequence[RunRecord]], tasks: Sequence[str], splits: Sequence[str] = ("validation", "test")
) -> pd.DataFrame:
    """Arm x (task, split): the mean over seeds, ± the standard deviation when there are several."""
    rows = {}
    for name, records in arms.items():
        row = {}
        for split in splits:
            summary = summarize({name: records}, split, tasks=list(tasks)).loc[name]
            for task in tasks:
                spread = f" ± {100 * summary[f'{task} sd']:.1f}" if len(records) > 1 else ""
                row[f"{task} {split}"] = f"{100 * summary[f'{task} mean']:.1f}%{spread}"
        rows[name] = {**row, "seeds": len(records)}
    return pd.DataFrame(rows).T


__all__ = ["accuracy_table", "arm_mean_sd", "interval", "mean_sd", "noise", "rate", "sd"]


# --- Chapters 2 and 3 (N1): a classifier without a Trainer as a run record, and comparisons on two splits ---
from collections.abc import Callable  # noqa: E402

from .errors import MTLError  # noqa: E402
from .evaluation import TaskEvaluation  # noqa: E402
from .records import split_rows  # noqa: E402
from .tasks import TaskData  # noqa: E402


def predictions_record(
    scenario: str,
    profile: str,
    seed: int,
    model: str,
    tasks: Sequence[TaskData],
    predict: Callable[[TaskData, str], Sequence[int]],
    splits: Sequence[str] = ("validation", "test"),
) -> RunRecord:
    """The run record of a classifier that needs no Trainer (nearest centroid, logistic regression):
    `predict(task, split)` gives one label per row of the task's split, in row order; each row's
    outcome is whether its label was predicted."""
    results: dict[str, dict[str, TaskEvaluation]] = {}
    for split in splits:
        for task in tasks:
            if task.level != "sentence":
                raise MTLError(
                    f"predictions_record: {task.name!r} is a {task.level}-level task, but a prediction "
                    "here is one label per sentence; score token tasks with a Trainer."
                )
            labels = np.array([row["label"] for row in split_rows(task, split)])
            predicted = np.asarray(predict(task, split))
            if predicted.shape != labels.shape:
                raise MTLError(
                    f"predictions_record: predict({task.name!r}, {split!r}) gave an array of shape "
                    f"{predicted.shape} for {len(labels)} rows; return one label per row, in row order."
                )
            correct = (predicted == labels).astype(np.int8)
            results.setdefault(split, {})[task.name] = TaskEvaluation(
                task.name, split, task.level, {"accuracy": float(correct.mean())}, correct, 0.0
            )
    return RunRecord.from_outcomes(scenario, profile, seed, model, {t.name: t for t in tasks}, results)


def comparison_table(comparisons: Mapping[str, Mapping[str, Comparison]]) -> pd.DataFrame:
    """One row per name (e.g. per task and the mean of both); per split, the difference in points with
    its interval ('+2.3 (+0.8 to +3.9)') and the outcome of the noise rule."""
    rows = {}
    for name, by_split in comparisons.items():
        rows[name] = {}
        for split, c in by_split.items():
            rows[name][f"{split}, points (95% interval)"] = interval(c)
            rows[name][f"{split} outcome"] = c.outcome
    return pd.DataFrame.from_dict(rows, orient="index")


__all__ += ["comparison_table", "predictions_record"]
