"""The one noise rule: a paired bootstrap over seeds and examples, with an effect size and interval."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from mtl_helpers import MTLError, RunRecord, compare, summarize
from mtl_helpers.evaluation import metric_from_outcomes
from mtl_helpers.records import encode_outcomes
from mtl_helpers.stats import MARGIN, RULE, Comparison, _contributions


def arm(name, correct_by_seed, task="t", split="validation", level="sentence"):
    records = []
    for seed, correct in enumerate(correct_by_seed):
        correct = np.asarray(correct)
        value = correct.mean() if level == "sentence" else None
        records.append(
            RunRecord(
                scenario=name,
                profile="cpu",
                seed=seed,
                model="m",
                tasks={
                    task: {"level": level, "metric": "accuracy" if level == "sentence" else "entity_f1", "sizes": {}}
                },
                metrics={split: {task: {"accuracy": value}}},
                outcomes={split: {task: encode_outcomes(correct)}},
                examples={split: {task: f"{task}-{split}-{len(correct)}"}},
            )
        )  # stands for a digest
    return records


def bernoulli(p, n, seeds, rng, spread=0.0):
    return [(rng.random(n) < p + spread * rng.standard_normal()).astype(int) for _ in range(seeds)]


def test_identical_arms_are_within_noise():
    rng = np.random.default_rng(0)
    runs = bernoulli(0.8, 400, 3, rng)
    result = compare(arm("a", runs), arm("b", runs))
    assert result.effect == 0 and result.low <= 0 <= result.high and not result.differs
    assert result.paired


def test_a_clear_difference_is_detected_with_its_interval():
    rng = np.random.default_rng(1)
    result = compare(arm("good", bernoulli(0.9, 500, 3, rng)), arm("bad", bernoulli(0.6, 500, 3, rng)))
    # Three seeds leave 2 degrees of freedom for the seed variance, so the t interval is wide: +/- about 7 points.
    assert result.outcome == "higher" and 0.25 < result.effect < 0.35 and 0.15 < result.low < result.effect
    assert re.fullmatch(r"\+\d\d\.\d points \(95% interval \+\d\d\.\d to \+\d\d\.\d\)", result.points())
    assert "beyond the noise" in result.sentence()


def test_seed_to_seed_variation_widens_the_interval():
    """Two arms whose seeds disagree a lot must get a wider interval than steady ones at the same means."""
    rng = np.random.default_rng(2)
    n = 400
    steady_a, steady_b = bernoulli(0.80, n, 3, rng), bernoulli(0.78, n, 3, rng)
    shaky_a = [(rng.random(n) < p).astype(int) for p in (0.70, 0.80, 0.90)]
    shaky_b = [(rng.random(n) < p).astype(int) for p in (0.88, 0.68, 0.78)]
    steady = compare(arm("a", steady_a), arm("b", steady_b))
    shaky = compare(arm("a", shaky_a), arm("b", shaky_b))
    assert (shaky.high - shaky.low) > 2 * (steady.high - steady.low)


def test_example_level_variation_is_counted_with_one_seed():
    """One run per arm: the interval is about the paired binomial one, not zero."""
    rng = np.random.default_rng(3)
    a = (rng.random(300) < 0.8).astype(int)
    b = a.copy()
    flip = rng.choice(300, 30, replace=False)
    b[flip] = 1 - b[flip]
    result = compare(arm("a", [a]), arm("b", [b]))
    discordant = np.mean(a != b)
    expected_half_width = 1.96 * np.sqrt(discordant / 300)
    assert (result.high - result.low) / 2 == pytest.approx(expected_half_width, rel=0.2)


def test_unpaired_seeds_are_resampled_independently():
    rng = np.random.default_rng(4)
    a = arm("a", bernoulli(0.8, 200, 3, rng))
    b = arm("b", bernoulli(0.8, 200, 2, rng))
    assert not compare(a, b).paired


def test_entity_f1_is_resampled_by_sentence():
    rng = np.random.default_rng(5)

    def counts(tp_rate):
        sentences = [rng.binomial(3, tp_rate, 200), rng.binomial(1, 0.2, 200), rng.binomial(1, 0.2, 200)]
        return [np.stack(sentences, 1) for _ in range(3)]

    result = compare(arm("a", counts(0.9), level="token"), arm("b", counts(0.5), level="token"))
    assert result.outcome == "higher" and result.metric == "entity_f1"


def test_different_example_sets_are_refused():
    rng = np.random.default_rng(6)
    with pytest.raises(MTLError, match="different .* sets"):
        compare(arm("a", bernoulli(0.8, 200, 1, rng)), arm("b", bernoulli(0.8, 100, 1, rng)))


def test_summary_gives_mean_and_sd_over_seeds():
    a = arm("a", [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    table = summarize({"a": a})
    assert table.loc["a", "t mean"] == pytest.approx(0.75) and table.loc["a", "t sd"] == pytest.approx(0.25)


def test_the_same_runs_give_the_same_interval_whatever_the_order_of_their_tasks():
    """A stored record lists its tasks alphabetically (JSON with sorted keys), a fresh one in training order:
    comparing the same runs must not depend on which of the two it is."""
    rng = np.random.default_rng(7)

    def two_tasks(name, p):
        first, second = (
            arm(name, bernoulli(p, 150, 3, rng), task="trec"),
            arm(name, bernoulli(p, 150, 3, rng), task="sst2"),
        )
        for a, b in zip(first, second):
            a.tasks.update(b.tasks)
            a.metrics["validation"].update(b.metrics["validation"])
            a.outcomes["validation"].update(b.outcomes["validation"])
            a.examples["validation"].update(b.examples["validation"])
        return first

    a, b = two_tasks("a", 0.8), two_tasks("b", 0.75)

    def reordered(records):
        return [dataclasses.replace(r, tasks=dict(sorted(r.tasks.items()))) for r in records]

    assert list(a[0].tasks) == ["trec", "sst2"] and list(reordered(a)[0].tasks) == ["sst2", "trec"]
    assert compare(a, b) == compare(reordered(a), reordered(b))


# -- four outcomes, one margin, and the smallest detectable effect


def made(low: float, high: float, standard_error: float | None = None, df: float = np.inf) -> Comparison:
    return Comparison("A", "B", (low + high) / 2, low, high, 3, 3, True, 500, "accuracy", standard_error, df)


@pytest.mark.parametrize(
    ("low", "high", "outcome", "differs"),
    [
        (0.001, 0.05, "higher", True),
        (-0.05, -0.001, "lower", True),
        (-0.019, 0.019, "equivalent", False),
        (-0.01, 0.03, "unresolved", False),
        (-0.02, 0.01, "unresolved", False),  # touching the margin is not inside it
    ],
)
def test_each_interval_has_one_of_four_outcomes(low, high, outcome, differs):
    result = made(low, high)
    assert (result.outcome, result.differs, result.as_row()["outcome"]) == (outcome, differs, outcome)


def test_an_unresolved_comparison_never_reads_as_no_difference():
    unresolved, equivalent = made(-0.01, 0.03), made(-0.015, 0.015)
    assert "unresolved" in unresolved.sentence() and "within the noise" not in unresolved.sentence()
    assert "neither a difference nor its absence" in unresolved.sentence()
    assert "equivalent" in equivalent.sentence() and "2 points or more" in equivalent.sentence()
    assert "beyond the noise" in made(0.01, 0.03).sentence()
    assert "Welch-Satterthwaite" in RULE and "±2 points" in RULE and "unresolved" in RULE and MARGIN == 0.02


def test_detectable_is_the_effect_found_with_80_percent_power():
    """(t(0.975, df) + t(0.8, df)) * SE: 2.80 standard errors with infinite df, more with few."""
    assert made(-0.01, 0.03, standard_error=0.01).detectable == pytest.approx(0.0280, abs=1e-4)
    assert made(-0.01, 0.03, standard_error=0.01, df=2).detectable == pytest.approx(0.0430 + 0.0106, abs=1e-4)
    assert made(-0.0196, 0.0196).detectable == pytest.approx(0.0280, abs=1e-4)  # built by hand: SE from the interval
    rng = np.random.default_rng(8)
    result = compare(arm("a", bernoulli(0.8, 300, 3, rng, 0.03)), arm("b", bernoulli(0.8, 300, 3, rng, 0.03)))
    assert result.detectable > (result.high - result.low) / 2 > 0 and result.as_row()["detectable (points)"] > 0


def test_entity_f1_example_covariance_matches_a_bootstrap_of_the_sentences():
    """F1 is a ratio: its per-sentence linearisation must give the covariance that resampling sentences gives."""
    rng = np.random.default_rng(9)
    gold, hard = rng.poisson(1.5, 400), rng.poisson(0.5, 400)  # shared by the runs: their covariance is not zero
    found = [rng.binomial(gold, p) for p in (0.6, 0.7, 0.8)]
    runs = np.stack([np.stack([tp, hard + rng.poisson(0.2, 400), gold - tp], 1) for tp in found])
    linearised = np.cov(_contributions("token", runs)) / 400
    draws = rng.multinomial(400, np.full(400, 1 / 400), size=20000).astype(float)
    bootstrap = np.cov(np.stack([metric_from_outcomes("token", o, draws) for o in runs]))
    assert linearised.min() > 0.15 * linearised.max()  # the covariances between runs matter here
    assert np.allclose(linearised, bootstrap, rtol=0.05)
