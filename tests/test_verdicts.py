"""The verdict protocol (mtl_helpers.verdicts): verdicts are decided on rows no choice has seen, from
runs long enough and seeds enough, with their scale stated."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mtl_helpers import MTLError, RunRecord, TaskEvaluation
from mtl_helpers.sweeps import Axis, run_sweep
from mtl_helpers.stats import Comparison
from mtl_helpers import verdicts
from mtl_helpers.verdicts import MIN_SEEDS, MIN_STEPS, Scale, Verdict, claim_word, verdict

RNG = np.random.default_rng(0)
VALIDATION = [{"text": f"validation sentence {i}", "label": i % 2} for i in range(40)]
TEST = [{"text": f"test sentence {i}", "label": i % 2} for i in range(60)]


def run(
    scenario: str, seed: int, p_correct: float, steps: int | None = 120, profile: str = "cpu", test_rows=TEST
) -> RunRecord:
    splits = {"validation": VALIDATION, "test": test_rows}
    task = SimpleNamespace(
        name="trec",
        level="sentence",
        splits=splits,
        sizes=lambda: {"train": 250, "validation": len(VALIDATION), "test": len(test_rows)},
    )
    results = {}
    for split, rows in splits.items():
        outcomes = (RNG.random(len(rows)) < p_correct).astype(np.int8)
        results[split] = {
            "trec": TaskEvaluation("trec", split, "sentence", {"accuracy": float(outcomes.mean())}, outcomes, 0.0)
        }
    budget = {} if steps is None else {"steps": steps, "examples": steps * 16, "epochs": 2}
    return RunRecord.from_outcomes(scenario, profile, seed, "m", {"trec": task}, results, budget=budget)


def arm(scenario: str, p: float, seeds: int = MIN_SEEDS, **kwargs) -> list[RunRecord]:
    return [run(scenario, s, p, **kwargs) for s in range(seeds)]


def a_sweep():
    def run_point(name, rate):
        return [run(name, s, 0.5 + rate) for s in range(2)]

    return run_sweep("sweep", [Axis("rate", (0.01, 0.03, 0.1, 0.3))], lambda r: r, run_point, extensions=0)


def test_a_verdict_on_test_states_its_outcome_and_scale(monkeypatch):
    monkeypatch.delenv("MTL_CAP_ROWS", raising=False)
    v = verdict(arm("tuned", 0.9), arm("baseline", 0.5), chosen_by=[a_sweep()])
    assert v.split == "test" and v.outcome == "higher" and v.effect > 0.2
    assert v.scale() == "250 training rows per task, 120 optimizer steps, 60 test rows, 5 seeds"
    assert v.summary().startswith("higher: +") and v.as_row()["scale"] == v.scale()


@pytest.mark.parametrize("split", ["validation", "train_eval", "train"])
def test_a_split_that_chooses_settings_is_refused(split):
    with pytest.raises(MTLError, match="chose settings"):
        verdict(arm("a", 0.9), arm("b", 0.5), split=split)


def test_the_rows_a_sweep_chose_on_are_refused_under_any_split_name():
    # The arms' "test" rows are the sweep's validation rows: a renamed copy of what chose the settings.
    a, b = arm("a", 0.9, test_rows=VALIDATION), arm("b", 0.5, test_rows=VALIDATION)
    with pytest.raises(MTLError, match="chose its settings on"):
        verdict(a, b, chosen_by=[a_sweep()])
    verdict(a, b)  # without the sweep named, the rows are not known to have chosen anything


def test_runs_shorter_than_the_minimum_are_refused_in_the_book_profiles(monkeypatch):
    monkeypatch.delenv("MTL_CAP_ROWS", raising=False)
    short = arm("short", 0.9, steps=MIN_STEPS - 1)
    with pytest.raises(MTLError, match=f"fewer than the {MIN_STEPS}"):
        verdict(short, arm("b", 0.5))
    assert verdict(short, arm("b", 0.5), min_steps=50).outcome == "higher"  # a lower bound stated on purpose


def test_too_few_seeds_are_refused_but_a_method_without_optimizer_is_not(monkeypatch):
    monkeypatch.delenv("MTL_CAP_ROWS", raising=False)
    with pytest.raises(MTLError, match="at least 5"):
        verdict(arm("a", 0.9, seeds=3), arm("b", 0.5))
    deterministic = arm("tfidf", 0.5, seeds=1, steps=None)
    v = verdict(arm("a", 0.9), deterministic)
    assert v.scale_b.steps == () and "optimizer steps" not in v.scale_b.text()
    assert "1 seed" in v.scale_b.text() and v.scale().startswith("a: ")


def test_smoke_and_capped_runs_are_not_held_to_the_book_budget(monkeypatch):
    monkeypatch.delenv("MTL_CAP_ROWS", raising=False)
    tiny = arm("a", 0.9, seeds=1, steps=2, profile="smoke")
    verdict(tiny, arm("b", 0.5, seeds=1, steps=2, profile="smoke"))
    monkeypatch.setenv("MTL_CAP_ROWS", "16")
    verdict(arm("a", 0.9, seeds=2, steps=3), arm("b", 0.5, seeds=2, steps=3))


def test_an_unresolved_verdict_says_what_the_design_could_detect():
    scale = Scale.of(arm("a", 0.6), "test")
    assert scale.min_steps == 120
    wide = Comparison("a", "b", 0.01, -0.05, 0.07, 5, 5, True, 60, standard_error=0.025, df=4.0)
    v = Verdict(wide, "test", scale, scale)
    assert v.outcome == "unresolved"
    assert v.summary() == f"unresolved: {wide.points()}; this design detects about {100 * wide.detectable:.1f} points"
    assert v.summary() == f"unresolved: {v.evidence()}"  # the outcome word, then the evidence
    narrow = Comparison("a", "b", 0.001, -0.01, 0.012, 5, 5, True, 60, standard_error=0.005, df=4.0)
    assert Verdict(narrow, "test", scale, scale).summary().endswith("within ±2 points")


@pytest.mark.parametrize(
    "predicts, words",
    [
        ("higher", ["confirmed", "refuted", "not supported", "unresolved"]),
        ("lower", ["refuted", "confirmed", "not supported", "unresolved"]),
        ("not lower", ["confirmed", "refuted", "confirmed", "unresolved"]),
        ("equivalent", ["refuted", "refuted", "confirmed", "unresolved"]),
    ],
)
def test_claim_words_follow_from_the_four_outcomes(predicts, words):
    outcomes = ["higher", "lower", "equivalent", "unresolved"]
    assert [claim_word(o, predicts) for o in outcomes] == words


def test_claim_word_refuses_unknown_inputs():
    with pytest.raises(MTLError, match="predicts"):
        claim_word("higher", "better")
    with pytest.raises(MTLError, match="within noise"):
        claim_word("within noise", "higher")


def test_glue_verdict_glues_the_sentence_the_word_and_the_scale(monkeypatch):
    glued = {}
    monkeypatch.setattr(verdicts, "glue", lambda name, value: glued.__setitem__(name, value))
    monkeypatch.delenv("MTL_CAP_ROWS", raising=False)
    v = verdict(arm("a", 0.9), arm("b", 0.5))
    verdicts.glue_verdict("c1", v, "confirmed", "confirmed: because")
    assert glued["verdict_c1"] == "confirmed: because" and glued["verdict_c1_word"] == "confirmed"
    assert glued["c1_outcome"] == "higher" and glued["c1_seeds"] == 5 and glued["c1_steps"] == "120"
    assert glued["c1_test_rows"] == "60" and glued["c1_train_rows"] == "250"
    assert glued["c1_effect"] == f"{100 * v.effect:+.1f}" and glued["c1_scale"] == v.scale()


def test_the_scale_counts_the_test_rows_of_the_compared_tasks_only(monkeypatch):
    """A run of two tasks compared on one of them: the verdict rests on that task's test rows."""
    monkeypatch.delenv("MTL_CAP_ROWS", raising=False)

    def two_tasks(scenario, seed, p):
        record = run(scenario, seed, p)
        other = run(scenario, seed, p, test_rows=TEST[:25])
        for field in ("metrics", "outcomes", "examples"):
            for split, per_task in getattr(other, field).items():
                getattr(record, field).setdefault(split, {})["sst2"] = per_task["trec"]
        record.tasks["sst2"] = other.tasks["trec"]
        return record

    a = [two_tasks("a", s, 0.9) for s in range(MIN_SEEDS)]
    b = [two_tasks("b", s, 0.5) for s in range(MIN_SEEDS)]
    assert "85 test rows" in verdict(a, b).scale()
    assert "60 test rows" in verdict(a, b, tasks=["trec"]).scale()
    assert "25 test rows" in verdict(a, b, terms=[("test", "sst2", 1.0)]).scale()


def test_a_loss_inside_the_margin_qualifies_a_claim_of_no_loss():
    """ "Keeps its accuracy" with a real loss smaller than the margin: qualified; beyond it: refuted."""
    small = Comparison("a", "b", -0.007, -0.013, -0.001, 5, 5, True, 500)
    large = Comparison("a", "b", -0.018, -0.035, -0.001, 5, 5, True, 500)
    assert claim_word("lower", "not lower", small) == "qualified"
    assert claim_word("lower", "not lower", large) == "refuted"
    assert claim_word("lower", "not lower") == "refuted"  # without the interval: the plain word
    assert claim_word("lower", "higher", small) == "refuted"  # only a claim of no loss is qualified
    with pytest.raises(MTLError, match="not the comparison's"):
        claim_word("higher", "not lower", small)
