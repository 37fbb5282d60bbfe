"""Verdicts: two arms compared on the test split, which no choice has seen, with the scale beside them.

The book's protocol: every choice (rates, epochs, rank, best checkpoint) is made on validation; every
verdict, effect and headline number comes from test. `verdict` makes the wrong use hard: it refuses a
split that a sweep of the arms chose on (by name, and by the digest of its examples, so a renamed copy
of the validation rows is caught too), refuses verdicts from runs shorter than `MIN_STEPS` optimizer
steps or with fewer than `MIN_SEEDS` seeds in the book's own profiles, and states the scale each
verdict rests on: training rows per task, optimizer steps, test rows and seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import MTLError
from .glue import glue
from .profiles import row_cap_from_environment
from .records import RunRecord
from .stats import MARGIN, Comparison, Term, compare
from .sweeps import SELECTION_SPLIT, Sweep

MIN_STEPS = 100  # no verdict from shorter runs: a recipe must have had room to mean something
MIN_SEEDS = 5  # runs per trained verdict arm in the cpu and gpu profiles
SELECTION_SPLITS = frozenset({SELECTION_SPLIT, "train", "train_eval"})  # never a verdict's split
RELAXED_PROFILES = frozenset({"smoke"})  # CI's seconds-long runs: the rules are checked, not enforced


@dataclass(frozen=True)
class Scale:
    """What one arm's verdict rests on."""

    train_rows: dict[str, int]  # per task
    steps: tuple[int, ...]  # optimizer steps, per seed (empty for a method without an optimizer)
    test_rows: dict[str, int]  # per task, on the verdict's split
    seeds: int

    @classmethod
    def of(cls, records: Sequence[RunRecord], split: str, tasks: Sequence[str] | None = None) -> "Scale":
        """The scale of an arm's runs: training rows of every task they trained on; test rows of the
        `tasks` a verdict compares (None: every task scored on `split`)."""
        first = records[0]
        scored = [t for t in first.outcomes.get(split, {}) if tasks is None or t in tasks]
        return cls(
            train_rows={t: int(info.get("sizes", {}).get("train", 0)) for t, info in first.tasks.items()},
            steps=tuple(int(r.budget["steps"]) for r in records if r.budget.get("steps") is not None),
            test_rows={t: len(first.outcome_array(t, split)) for t in scored},
            seeds=len(records),
        )

    @property
    def min_steps(self) -> int | None:
        return min(self.steps) if self.steps else None

    def text(self) -> str:
        """'250 training rows per task, 126 optimizer steps, 1,372 test rows, 5 seeds'."""
        rows = sorted(set(self.train_rows.values()))
        rows_text = f"{rows[0]:,}" if len(rows) == 1 else " and ".join(f"{r:,}" for r in rows)
        parts = [f"{rows_text} training rows per task"]
        if self.steps:
            low, high = min(self.steps), max(self.steps)
            parts.append(f"{low:,} optimizer steps" if low == high else f"{low:,}-{high:,} optimizer steps")
        parts.append(f"{sum(self.test_rows.values()):,} test rows")
        parts.append(f"{self.seeds} seed{'s' if self.seeds != 1 else ''}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Verdict:
    """A comparison decided on a held-out split no choice saw, with the scale of both arms."""

    comparison: Comparison
    split: str
    scale_a: Scale
    scale_b: Scale

    @property
    def outcome(self) -> str:
        return self.comparison.outcome

    @property
    def effect(self) -> float:
        return self.comparison.effect

    def scale(self) -> str:
        """Both arms' scale in one phrase (one when they agree)."""
        a, b = self.scale_a.text(), self.scale_b.text()
        return a if a == b else f"{self.comparison.a}: {a}; {self.comparison.b}: {b}"

    def summary(self) -> str:
        """'higher: +4.6 points (95% interval +1.2 to +8.0)': the outcome, then `evidence()`."""
        return f"{self.comparison.outcome}: {self.evidence()}"

    def evidence(self) -> str:
        """'+4.6 points (95% interval +1.2 to +8.0)', and for an unresolved comparison the smallest effect
        the design could detect (for a sentence that names the outcome in its own words)."""
        c = self.comparison
        text = c.points()
        if c.outcome == "unresolved":
            text += f"; this design detects about {100 * c.detectable:.1f} points"
        elif c.outcome == "equivalent":
            text += f"; within ±{100 * MARGIN:g} points"
        return text

    def as_row(self) -> dict:
        return {**self.comparison.as_row(), "split": self.split, "scale": self.scale()}


# What a claim predicts of "arm A minus arm B", and the word each outcome earns it. A claim of a gain is
# confirmed only by a difference; a claim that nothing is lost ("keeps its accuracy") only by equivalence
# or a gain; an unresolved comparison confirms and refutes nothing, and says so.
CLAIM_WORDS = {
    "higher": {"higher": "confirmed", "lower": "refuted", "equivalent": "not supported", "unresolved": "unresolved"},
    "lower": {"lower": "confirmed", "higher": "refuted", "equivalent": "not supported", "unresolved": "unresolved"},
    "not lower": {"higher": "confirmed", "equivalent": "confirmed", "lower": "refuted", "unresolved": "unresolved"},
    "equivalent": {"equivalent": "confirmed", "higher": "refuted", "lower": "refuted", "unresolved": "unresolved"},
}


def claim_word(outcome: str, predicts: str, comparison: Comparison | None = None) -> str:
    """The verdict word for a claim that predicts `predicts` ("higher", "lower", "not lower" or
    "equivalent", of arm A minus arm B) when the comparison's outcome is `outcome`.

    With `comparison`, a claim that predicts "not lower" (a task *keeps* its accuracy, an adapter reaches
    *most* of it) whose arm is lower by less than the book's margin, the whole interval inside it, is
    "qualified": the loss is real, but smaller than any the book counts as a difference worth having."""
    if predicts not in CLAIM_WORDS:
        raise MTLError(f"claim_word(predicts={predicts!r}): choose one of {sorted(CLAIM_WORDS)}.")
    if outcome not in CLAIM_WORDS[predicts]:
        raise MTLError(f"claim_word(outcome={outcome!r}): an outcome is one of {sorted(CLAIM_WORDS[predicts])}.")
    if comparison is not None and comparison.outcome != outcome:
        raise MTLError(f"claim_word: outcome {outcome!r} is not the comparison's ({comparison.outcome!r}).")
    if predicts == "not lower" and outcome == "lower" and comparison is not None and comparison.low > -MARGIN:
        return "qualified"
    return CLAIM_WORDS[predicts][outcome]


def glue_verdict(claim: str, v: Verdict, word: str, text: str) -> None:
    """Glue a claim's verdict for its chapter and the answers page: `verdict_<claim>` (the sentence),
    `verdict_<claim>_word`, and the scale beside it: `<claim>_effect` (points), `<claim>_interval`,
    `<claim>_outcome`, `<claim>_scale`, `<claim>_train_rows`, `<claim>_steps`, `<claim>_test_rows`,
    `<claim>_seeds` (of arm A; `<claim>_scale` names both arms when they differ)."""
    c, a = v.comparison, v.scale_a
    glue(f"verdict_{claim}", text)
    glue(f"verdict_{claim}_word", word)
    glue(f"{claim}_effect", f"{100 * c.effect:+.1f}")
    glue(f"{claim}_interval", f"{100 * c.low:+.1f} to {100 * c.high:+.1f}")
    glue(f"{claim}_outcome", c.outcome)
    glue(f"{claim}_scale", v.scale())
    glue(f"{claim}_train_rows", " / ".join(f"{n:,}" for n in sorted(set(a.train_rows.values()))))
    glue(f"{claim}_steps", f"{a.min_steps:,}" if a.steps else "none")
    glue(f"{claim}_test_rows", f"{sum(a.test_rows.values()):,}")
    glue(f"{claim}_seeds", a.seeds)


def _relaxed(records: Sequence[RunRecord]) -> bool:
    return all(r.profile in RELAXED_PROFILES for r in records) or row_cap_from_environment() is not None


def _check_split(records: Sequence[RunRecord], split: str, chosen_by: Sequence[Sweep]) -> None:
    used = {s.selected_on for s in chosen_by} | SELECTION_SPLITS
    if split in used:
        raise MTLError(
            f"A verdict on {split!r}: that split chose settings (sweeps choose on {SELECTION_SPLIT!r}), so a "
            "verdict there would be biased in favour of the tuned arm. Decide verdicts on 'test' (or an "
            "out-of-distribution split), which no choice has seen."
        )
    for sweep in chosen_by:
        for record in records:
            for task, digest in record.examples.get(split, {}).items():
                if sweep.selection.get(task) == digest:
                    raise MTLError(
                        f"The {split!r} rows of {task!r} in {record.scenario!r} (seed {record.seed}) are the very "
                        f"rows sweep {sweep.prefix!r} chose its settings on; decide the verdict on rows no "
                        "choice has seen (the test split)."
                    )


def _check_budget(records: Sequence[RunRecord], name: str, min_steps: int, min_seeds: int) -> None:
    trained = [r for r in records if r.budget.get("steps") is not None]
    if not trained or _relaxed(records):
        return
    short = [r for r in trained if int(r.budget["steps"]) < min_steps]
    if short:
        r = short[0]
        raise MTLError(
            f"Arm {name!r}: run {r.scenario!r} (seed {r.seed}) took {r.budget['steps']} optimizer steps, fewer than "
            f"the {min_steps} a verdict needs. Train it longer (more epochs or rows), or pass min_steps to "
            "state a lower bound on purpose."
        )
    if len(trained) < min_seeds:
        raise MTLError(
            f"Arm {name!r} has {len(trained)} seed(s); a verdict needs at least {min_seeds}. Run more seeds "
            "(the profile's `seeds`), or pass min_seeds to state a lower bound on purpose."
        )


def verdict(
    a: Sequence[RunRecord],
    b: Sequence[RunRecord],
    split: str = "test",
    tasks: Sequence[str] | None = None,
    names: tuple[str, str] | None = None,
    chosen_by: Sequence[Sweep] = (),
    terms: Sequence[Term] | None = None,
    min_steps: int = MIN_STEPS,
    min_seeds: int = MIN_SEEDS,
) -> Verdict:
    """Arm `a` against arm `b` on `split` (test by default) by the book's noise rule (`stats.compare`).

    `chosen_by` lists the sweeps that chose either arm's settings: their selection rows are refused as
    the verdict's rows. Trained arms need `min_steps` optimizer steps per run and `min_seeds` seeds,
    except in the smoke profile and under MTL_CAP_ROWS (CI's small structural runs).
    """
    if not a or not b:
        raise MTLError("verdict needs at least one run in each arm.")
    names = names or (a[0].scenario, b[0].scenario)
    for arm, name in ((a, names[0]), (b, names[1])):
        _check_split(arm, split, chosen_by)
        _check_budget(arm, name, min_steps, min_seeds)
    comparison = compare(a, b, split=split, tasks=tasks, names=names, terms=terms)
    # the rows the verdict was decided on: the compared tasks' (a run may be scored on more)
    compared = [t for s, t, _ in terms if s == split] if terms is not None else tasks
    return Verdict(comparison, split, Scale.of(a, split, compared), Scale.of(b, split, compared))
