"""The book's one noise rule: a t interval whose standard error counts seeds and held-out examples.

Two arms (several runs each, one per seed, scored on the same held-out examples) are compared by
the difference D of their mean score over seeds. Its standard error has two parts:

- seeds (training noise): with the same seeds in both arms, the sample variance of the per-seed
  differences over S seeds, divided by S; otherwise s_a^2/S_a + s_b^2/S_b. This part also holds the
  noise of each single run on each single example (a run's luck on an example), since that moves
  the per-seed scores.
- examples (a finite test set): how D's item-level part would move with another sample of examples,
  from the covariance, over the examples, of the runs' per-example contributions (the outcomes for
  accuracy; the linearised contributions for entity F1, a ratio), counting only the covariance
  between different runs, so that a run's own example-by-example luck, already in the seed part, is
  not counted twice.

The degrees of freedom follow Welch-Satterthwaite (the seed part with S - 1, the example part with
N - 1), and the interval is D +/- t(0.975, df) * SE: a t interval, honest with 3 seeds where a
bootstrap over seeds (10 distinct resamples of 3 seeds) shrinks the seed variance by a third and
under-covers. With one run per arm no seed variance can be estimated: the interval is then the paired
percentile bootstrap over the examples.

Each comparison ends in one of four outcomes, with one margin for the whole book (MARGIN, 2 points):
"higher" or "lower" when the interval excludes zero, "equivalent" when it lies inside +/- MARGIN, and
"unresolved" otherwise: the runs can tell neither a difference nor its absence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .errors import MTLError
from .evaluation import metric_from_outcomes
from .records import RunRecord

N_BOOT = 4000
LEVEL = 0.95
MARGIN = 0.02  # the book-wide equivalence margin, in metric units: 2 points
POWER = 0.80  # the power at which `Comparison.detectable` is stated
RULE = (
    "95% t interval for the difference of the means over seeds, whose standard error adds the seed-to-seed "
    "variance (of the per-seed differences when both arms share their seeds) and the variance from the finite "
    "set of held-out examples, with Welch-Satterthwaite degrees of freedom (one seed per arm: a paired "
    "bootstrap over the examples, 4,000 replicates); a difference counts (higher or lower) only when its "
    "interval excludes zero, the arms are equivalent when the interval lies within ±2 points, and anything "
    "else is unresolved: neither a difference nor its absence is shown"
)


@dataclass(frozen=True)
class Comparison:
    """Arm A minus arm B: the effect (in metric units, e.g. accuracy as a fraction) with its interval.

    `standard_error` and `df` are those of the t interval (df infinite for the bootstrap of one-seed
    arms); a Comparison built by hand without them takes its standard error from the interval."""

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
    standard_error: float | None = None
    df: float = float("inf")

    @property
    def verdict(self) -> str:
        """The old two-word reading, "within noise" for both equivalent and unresolved. Only the chapters
        not yet rebuilt on the four outcomes (4, 5, 7, 8 and 9) still read it; it goes when they move."""
        return "higher" if self.low > 0 else "lower" if self.high < 0 else "within noise"

    @property
    def differs(self) -> bool:
        """The interval excludes zero: higher or lower."""
        return self.low > 0 or self.high < 0

    @property
    def outcome(self) -> str:
        """One of four: higher or lower (the interval excludes zero), equivalent (it lies within +/- MARGIN),
        else unresolved: the runs show neither a difference nor its absence."""
        if self.differs:
            return "higher" if self.low > 0 else "lower"
        return "equivalent" if -MARGIN < self.low and self.high < MARGIN else "unresolved"

    @property
    def detectable(self) -> float:
        """The smallest true effect (metric units) this design detects with 80% power at the 95% level:
        (t(0.975, df) + t(0.80, df)) * SE, about 2.8 standard errors."""
        critical = scipy_stats.t.ppf(1 - (1 - LEVEL) / 2, self.df)
        se = self.standard_error if self.standard_error is not None else (self.high - self.low) / (2 * critical)
        return float((critical + scipy_stats.t.ppf(POWER, self.df)) * se)

    def points(self) -> str:
        """The effect and its interval in points: '+2.3 points (95% interval +0.8 to +3.9)'."""
        return f"{100 * self.effect:+.1f} points (95% interval {100 * self.low:+.1f} to {100 * self.high:+.1f})"

    def sentence(self, what: str | None = None) -> str:
        """A readable outcome, e.g. 'full fine-tuning scored 2.3 points higher than head-only
        (95% interval +0.8 to +3.9): beyond the noise.'"""
        what = what or f"mean {self.metric.replace('_', ' ')}"
        size = f"{abs(100 * self.effect):.1f} points {'higher' if self.effect >= 0 else 'lower'}"
        interval = f"95% interval {100 * self.low:+.1f} to {100 * self.high:+.1f}"
        margin = f"{100 * MARGIN:g} points"
        tail = {
            "higher": "beyond the noise",
            "lower": "beyond the noise",
            "equivalent": f"equivalent: the interval rules out a difference of {margin} or more",
            "unresolved": (
                f"unresolved: the interval holds zero but also differences of {margin} or more, so these runs "
                f"show neither a difference nor its absence (they detect about {100 * self.detectable:.1f} points)"
            ),
        }[self.outcome]
        return f"{self.a} scored {size} than {self.b} in {what} ({interval}): {tail}"

    def as_row(self) -> dict:
        return {
            "A": self.a,
            "B": self.b,
            "A - B (points)": 100 * self.effect,
            "low": 100 * self.low,
            "high": 100 * self.high,
            "outcome": self.outcome,
            "detectable (points)": 100 * self.detectable,
            "seeds A": self.seeds_a,
            "seeds B": self.seeds_b,
        }


Term = tuple[str, str, float]  # (split, task, weight)
Outcomes = tuple[str, np.ndarray, np.ndarray, float]  # (level, arm A's outcomes by run, arm B's, weight)


@dataclass(frozen=True)
class _Interval:
    effect: float
    low: float
    high: float
    standard_error: float
    df: float


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


def _contributions(level: str, outcomes: np.ndarray) -> np.ndarray:
    """(runs, n): each example's contribution to each run's metric: reweighting the examples by w (mean 1)
    moves the metric by mean((w - 1) * contribution), to first order, so their covariance over the examples
    divided by n is the covariance of the runs' metrics over samples of examples. For accuracy the outcome
    itself; for entity F1 = 2 TP / (2 TP + FP + FN), a ratio, its linearisation (2 tp_i - F1 d_i) / mean(d)
    with d_i = 2 tp_i + fp_i + fn_i (what a bootstrap of the sentences estimates, without its random draws)."""
    outcomes = np.asarray(outcomes, dtype=float)
    if level == "sentence":
        return outcomes
    tp, fp, fn = outcomes[..., 0], outcomes[..., 1], outcomes[..., 2]
    denominator = 2 * tp + fp + fn
    mean_denominator = denominator.mean(axis=1, keepdims=True)
    scores = np.array([metric_from_outcomes("token", o) for o in outcomes])[:, None]
    safe = np.where(mean_denominator > 0, mean_denominator, 1.0)
    return np.where(mean_denominator > 0, (2 * tp - scores * denominator) / safe, 0.0)


def _mean_off_diagonal(block: np.ndarray) -> float:
    k = len(block)
    return float((block.sum() - np.trace(block)) / (k * (k - 1)))


def _t_interval(terms: Sequence[Outcomes], paired: bool) -> _Interval:
    """The calibrated interval (module docstring) from outcome arrays: `compare` calls this after its checks."""
    runs_a = sum(w * np.array([metric_from_outcomes(level, o) for o in out_a]) for level, out_a, _, w in terms)
    runs_b = sum(w * np.array([metric_from_outcomes(level, o) for o in out_b]) for level, _, out_b, w in terms)
    k_a = len(runs_a)
    effect = float(runs_a.mean() - runs_b.mean())
    # Covariance over examples of the runs' metrics (A's runs, then B's): tasks hold different examples, so
    # their parts add with the squared weights.
    covariance = sum(
        w**2
        * np.atleast_2d(np.cov(np.concatenate([_contributions(level, out_a), _contributions(level, out_b)])))
        / out_a.shape[1]
        for level, out_a, out_b, w in terms
    )
    examples = min(out_a.shape[1] for _, out_a, _, _ in terms)
    parts = []  # (variance, degrees of freedom)
    if paired:
        differences = runs_a - runs_b
        parts.append((differences.var(ddof=1) / k_a, k_a - 1))
        aa, ab, bb = covariance[:k_a, :k_a], covariance[:k_a, k_a:], covariance[k_a:, k_a:]
        example_variance = _mean_off_diagonal(aa - ab - ab.T + bb)
    else:
        within = []
        for runs, block in ((runs_a, covariance[:k_a, :k_a]), (runs_b, covariance[k_a:, k_a:])):
            if len(runs) > 1:
                parts.append((runs.var(ddof=1) / len(runs), len(runs) - 1))
                within.append(_mean_off_diagonal(block))
            else:  # one run: its luck on each example cannot be told from the examples' own variation
                within.append(float(block[0, 0]))
        example_variance = within[0] + within[1] - 2 * float(covariance[:k_a, k_a:].mean())
    parts.append((max(example_variance, 0.0), examples - 1))
    variance = sum(v for v, _ in parts)
    if variance <= 0:
        return _Interval(effect, effect, effect, 0.0, float("inf"))
    df = variance**2 / sum(v**2 / d for v, d in parts if v > 0)
    half_width = float(scipy_stats.t.ppf(1 - (1 - LEVEL) / 2, df) * np.sqrt(variance))
    return _Interval(effect, effect - half_width, effect + half_width, float(np.sqrt(variance)), float(df))


def _percentile_bootstrap(terms: Sequence[Outcomes], paired: bool, n_boot: int, rng: np.random.Generator) -> _Interval:
    """The book's former rule, kept for one run per arm (where it is the paired percentile bootstrap over the
    examples): each replicate resamples the seeds (the same draw for both arms when they share their seeds)
    and, independently, the examples (the same draw for both arms). With few seeds it under-covers."""
    k_a, k_b = len(terms[0][1]), len(terms[0][2])

    def draw_seeds(k):
        return rng.multinomial(k, np.full(k, 1 / k), size=n_boot) / k

    weights_a = draw_seeds(k_a)
    weights_b = weights_a if paired else draw_seeds(k_b)
    effect, replicates = 0.0, np.zeros(n_boot)
    for level, out_a, out_b, weight in terms:
        n = out_a.shape[1]
        # How often each example is drawn in each replicate (shared by both arms); counted from integer draws,
        # which is much faster than numpy's multinomial over n categories.
        draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
        resample = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)
        per_seed_a = np.stack([metric_from_outcomes(level, o, resample) for o in out_a], axis=1)  # (boot, seeds)
        per_seed_b = np.stack([metric_from_outcomes(level, o, resample) for o in out_b], axis=1)
        replicates += weight * ((weights_a * per_seed_a).sum(1) - (weights_b * per_seed_b).sum(1))
        point_a = np.mean([metric_from_outcomes(level, o) for o in out_a])
        point_b = np.mean([metric_from_outcomes(level, o) for o in out_b])
        effect += weight * (point_a - point_b)
    low, high = np.quantile(replicates, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return _Interval(float(effect), float(low), float(high), float(replicates.std(ddof=1)), float("inf"))


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
    """Compare arm `a` with arm `b` (lists of run records, one per seed) by the noise rule (module docstring).

    The score of an arm is its mean over seeds of the weighted sum of `terms` (split, task, weight);
    by default the mean primary metric over `tasks` (all of the records' tasks) on `split`. `n_boot` and
    `seed` serve the bootstrap of one-run arms.
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
    outcomes: list[Outcomes] = []
    examples = 0
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
        outcomes.append((level, out_a, out_b, weight))
    if len(a) == 1 and len(b) == 1:
        found = _percentile_bootstrap(outcomes, paired, n_boot, np.random.default_rng(seed))
    else:
        single = [
            (task, term_split) for (term_split, task, _), (_, out_a, _, _) in zip(terms, outcomes) if len(out_a[0]) < 2
        ]
        if single:
            task, term_split = single[0]
            raise MTLError(
                f"The runs hold a single {task} {term_split} example: the noise rule cannot tell how the score "
                "would move with other examples; score them on a split of at least 2 examples."
            )
        found = _t_interval(outcomes, paired)
    metric = a[0].tasks[terms[0][1]]["metric"] if len({a[0].tasks[t]["metric"] for _, t, _ in terms}) == 1 else "score"
    label_a, label_b = names or (a[0].scenario, b[0].scenario)
    return Comparison(
        label_a,
        label_b,
        found.effect,
        found.low,
        found.high,
        len(a),
        len(b),
        paired,
        examples,
        metric,
        found.standard_error,
        found.df,
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
