"""The book's one noise rule: a paired bootstrap over seeds and held-out examples.

Two arms (several runs each, one per seed, scored on the same held-out examples) are compared by
the difference of their mean score. Each bootstrap replicate resamples the seeds (the same draw for
both arms when they share their seeds, since a seed fixes the heads' initial weights and the data
order) and, independently, the examples (the same draw for both arms, since both were scored on the
same examples). The spread of the replicates therefore counts both seed-to-seed variation (training
noise) and example-level variation (a finite test set). The difference is "within noise" unless the
95% interval excludes zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import MTLError
from .evaluation import metric_from_outcomes
from .records import RunRecord

N_BOOT = 4000
LEVEL = 0.95
RULE = (
    "paired bootstrap over seeds and held-out examples (4,000 replicates, 95% percentile interval); "
    "a difference counts only when its interval excludes zero"
)


@dataclass(frozen=True)
class Comparison:
    """Arm A minus arm B: the effect (in metric units, e.g. accuracy as a fraction) with its interval."""

    a: str
    b: str
    effect: float
    low: float
    high: float
    seeds_a: int
    seeds_b: int
    paired: bool
    examples: int
    metric: str = "accuracy"

    @property
    def verdict(self) -> str:
        return "higher" if self.low > 0 else "lower" if self.high < 0 else "within noise"

    @property
    def differs(self) -> bool:
        return self.verdict != "within noise"

    def points(self) -> str:
        """The effect and its interval in points: '+2.3 points (95% interval +0.8 to +3.9)'."""
        return f"{100 * self.effect:+.1f} points (95% interval {100 * self.low:+.1f} to {100 * self.high:+.1f})"

    def sentence(self, what: str | None = None) -> str:
        """A readable verdict, e.g. 'full fine-tuning scored 2.3 points higher than head-only
        (95% interval +0.8 to +3.9): beyond the noise.'"""
        what = what or f"mean {self.metric.replace('_', ' ')}"
        size = f"{abs(100 * self.effect):.1f} points {'higher' if self.effect >= 0 else 'lower'}"
        interval = f"95% interval {100 * self.low:+.1f} to {100 * self.high:+.1f}"
        tail = "beyond the noise" if self.differs else "within the noise"
        return f"{self.a} scored {size} than {self.b} in {what} ({interval}): {tail}"

    def as_row(self) -> dict:
        return {
            "A": self.a,
            "B": self.b,
            "A - B (points)": 100 * self.effect,
            "low": 100 * self.low,
            "high": 100 * self.high,
            "verdict": self.verdict,
            "seeds A": self.seeds_a,
            "seeds B": self.seeds_b,
        }


Term = tuple[str, str, float]  # (split, task, weight)


def _terms(records: Sequence[RunRecord], split: str, tasks: Sequence[str] | None) -> list[Term]:
    # Sorted: a record read back from JSON lists its tasks alphabetically, a fresh one in training order, and the
    # order of the terms decides which random draws each task gets; the same runs must give the same interval.
    names = sorted(tasks) if tasks is not None else sorted(records[0].tasks)
    return [(split, t, 1 / len(names)) for t in names]


def _check_same_examples(records: Sequence[RunRecord], split: str, task: str) -> None:
    """Outcomes are paired example by example: every run must have been scored on the same rows, in the same order."""
    for r in records:
        if not r.examples.get(split, {}).get(task):
            raise MTLError(
                f"Record {r.scenario!r} (seed {r.seed}) does not say which {task} {split} examples it was "
                "scored on (it was written before records kept a digest of them); re-run it to compare it."
            )
    digests = {}
    for r in records:
        digests.setdefault(r.examples[split][task], []).append(f"{r.scenario} seed {r.seed}")
    if len(digests) > 1:
        groups = "; ".join(", ".join(runs) for runs in digests.values())
        raise MTLError(
            f"These runs were scored on different {task} {split} examples (groups with the same examples: "
            f"{groups}), e.g. from different copies of the data; compare runs scored on the same held-out "
            "rows."
        )


def _outcomes(records: Sequence[RunRecord], split: str, task: str) -> tuple[str, np.ndarray]:
    arrays = [r.outcome_array(task, split) for r in records]
    if len({a.shape for a in arrays}) != 1:
        raise MTLError(
            f"The runs of {records[0].scenario!r} were scored on different numbers of {task} {split} examples "
            f"({sorted({len(a) for a in arrays})}); the noise rule needs the same examples in every run."
        )
    return records[0].tasks[task]["level"], np.stack(arrays)


def compare(
    a: Sequence[RunRecord],
    b: Sequence[RunRecord],
    split: str = "validation",
    tasks: Sequence[str] | None = None,
    names: tuple[str, str] | None = None,
    terms: Sequence[Term] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Comparison:
    """Compare arm `a` with arm `b` (lists of run records, one per seed) by the paired bootstrap.

    The score of an arm is its mean over seeds of the weighted sum of `terms` (split, task, weight);
    by default the mean primary metric over `tasks` (all of the records' tasks) on `split`.
    """
    if not a or not b:
        raise MTLError("compare needs at least one run in each arm.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise MTLError(
            f"compare(n_boot={n_boot!r}): the number of bootstrap replicates must be an integer >= 1 "
            f"(the book uses {N_BOOT})."
        )
    # By seed, before any random draw: the same runs listed in another order must give the same numbers.
    a, b = sorted(a, key=_run_order), sorted(b, key=_run_order)
    terms = list(terms) if terms is not None else _terms(a, split, tasks)
    seeds_a, seeds_b = [r.seed for r in a], [r.seed for r in b]
    paired = sorted(seeds_a) == sorted(seeds_b) and len(set(seeds_a)) == len(seeds_a)
    if paired:
        b = sorted(b, key=lambda r: seeds_a.index(r.seed))
    rng = np.random.default_rng(seed)

    def draw_seeds(k):
        return rng.multinomial(k, np.full(k, 1 / k), size=n_boot) / k

    weights_a = draw_seeds(len(a))
    weights_b = weights_a if paired else draw_seeds(len(b))
    effect, replicates, examples = 0.0, np.zeros(n_boot), 0
    for term_split, task, weight in terms:
        level, out_a = _outcomes(a, term_split, task)
        level_b, out_b = _outcomes(b, term_split, task)
        if level != level_b:
            raise MTLError(
                f"Arm A scores {task} as a {level} task and arm B as a {level_b} task; compare runs of the same task."
            )
        if out_a.shape[1:] != out_b.shape[1:]:
            raise MTLError(
                f"The arms were scored on different {task} {term_split} sets ({out_a.shape[1]} vs "
                f"{out_b.shape[1]} examples); compare runs on the same held-out examples."
            )
        _check_same_examples([*a, *b], term_split, task)
        n = out_a.shape[1]
        if n == 0:
            raise MTLError(
                f"The runs hold no {task} {term_split} examples, so there is nothing to compare; score them "
                "on a non-empty split."
            )
        examples += n
        resample = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)  # shared by both arms
        per_seed_a = np.stack([metric_from_outcomes(level, o, resample) for o in out_a], axis=1)  # (boot, seeds)
        per_seed_b = np.stack([metric_from_outcomes(level, o, resample) for o in out_b], axis=1)
        replicates += weight * ((weights_a * per_seed_a).sum(1) - (weights_b * per_seed_b).sum(1))
        point_a = np.mean([metric_from_outcomes(level, o) for o in out_a])
        point_b = np.mean([metric_from_outcomes(level, o) for o in out_b])
        effect += weight * (point_a - point_b)
    low, high = np.quantile(replicates, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    metric = a[0].tasks[terms[0][1]]["metric"] if len({a[0].tasks[t]["metric"] for _, t, _ in terms}) == 1 else "score"
    label_a, label_b = names or (a[0].scenario, b[0].scenario)
    return Comparison(
        label_a, label_b, float(effect), float(low), float(high), len(a), len(b), paired, examples, metric
    )


def _run_order(record: RunRecord) -> tuple:
    return (record.seed, record.scenario, record.model)


def summarize(
    arms: dict[str, Sequence[RunRecord]], split: str = "validation", tasks: Sequence[str] | None = None
) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each task's metric (and their mean), one row per arm."""
    rows = []
    for name, records in arms.items():
        if not records:
            raise MTLError(f"summarize: arm {name!r} has no runs; give each arm at least one run record.")
        names = list(tasks) if tasks is not None else list(records[0].tasks)
        task_sets = sorted({"+".join(sorted(r.tasks)) for r in records})
        if len(task_sets) > 1 and tasks is None:
            raise MTLError(
                f"summarize: arm {name!r} mixes runs trained on different tasks ({', '.join(task_sets)}); "
                "give each arm runs of one task set, or pass tasks=[...] that every run has."
            )
        lacking = sorted({f"{r.scenario} seed {r.seed}" for r in records for t in names if t not in r.tasks})
        if lacking:
            raise MTLError(
                f"summarize: in arm {name!r}, {', '.join(lacking)} lack(s) one of the tasks {names}; pass "
                "tasks=[...] that every run has."
            )
        row = {"arm": name, "seeds": len(records)}
        values = np.array([[r.metric(t, split) for t in names] for r in records])
        for i, task in enumerate(names):
            row[f"{task} mean"], row[f"{task} sd"] = (
                values[:, i].mean(),
                values[:, i].std(ddof=1) if len(values) > 1 else 0.0,
            )
        means = values.mean(axis=1)
        row["mean"], row["mean sd"] = means.mean(), means.std(ddof=1) if len(means) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows).set_index("arm")
