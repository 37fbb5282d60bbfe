"""The one noise rule: a paired bootstrap over seeds and examples, with an effect size and interval."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from mtl_helpers import MTLError, RunRecord, compare, summarize
from mtl_helpers.records import encode_outcomes


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
    assert result.effect == 0 and result.low <= 0 <= result.high and result.verdict == "within noise"
    assert result.paired


def test_a_clear_difference_is_detected_with_its_interval():
    rng = np.random.default_rng(1)
    result = compare(arm("good", bernoulli(0.9, 500, 3, rng)), arm("bad", bernoulli(0.6, 500, 3, rng)))
    assert result.verdict == "higher" and 0.25 < result.effect < 0.35 and result.low > 0.2
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
    assert result.verdict == "higher" and result.metric == "entity_f1"


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
