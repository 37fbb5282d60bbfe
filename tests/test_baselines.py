"""The TF-IDF baseline and the choice of C shared with the layer probe: the grid extends past an edge
holding the best score, the baseline beats the majority class on real data, its record is an arm that
`compare` takes (against a five-seed arm and a Trainer's record), and it never saw held-out text."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from conftest import data_dir, tiny_model
from mtl_helpers import MTLError, RunRecord, TaskEvaluation, Trainer, TrainConfig, compare, load_task
from mtl_helpers.baselines import MODEL, SCENARIO, fit_tfidf, score_ood_rows, tfidf_baseline
from mtl_helpers.leakage import rows_sharing_text
from mtl_helpers.logreg import C_GRID, check_grid, sweep_c
from mtl_helpers.records import examples_digest

# ---------------------------------------------------------------- the choice of C


def peaked(at: float):
    """A fake fit whose validation score peaks at log10(C) = `at`; the 'model' is its C."""
    return lambda c: (-((math.log10(c) - at) ** 2), c)


def test_a_best_c_inside_the_grid_is_interior_and_nothing_is_added():
    sweep = sweep_c(peaked(0.2))
    assert sweep.chosen == 1.0 and sweep.edge == "interior" and sweep.extended == []
    assert list(sweep.table.index) == list(C_GRID) and sweep.model == 1.0
    assert sweep.table["converged"].all()


def test_a_best_c_at_the_top_edge_extends_the_grid_until_it_is_inside():
    sweep = sweep_c(peaked(3.2))  # best of the grid at 100, its top
    assert sweep.extended == [1000.0, 10000.0]  # 1e4 scores lower than 1e3: the search stops there
    assert sweep.chosen == 1000.0 and sweep.edge == "interior"


def test_a_best_c_at_the_bottom_edge_extends_downwards():
    sweep = sweep_c(peaked(-2.6))
    assert sweep.extended == [0.0001, 0.001] and sweep.chosen == 0.001 and sweep.edge == "interior"


@pytest.mark.parametrize(
    "slope, edge, extended",
    [(1, "edge: high, could not extend", [1e3, 1e4]), (-1, "edge: low, could not extend", [1e-4, 1e-3])],
)
def test_the_extension_stops_at_the_limits_and_says_so(slope, edge, extended):
    sweep = sweep_c(lambda c: (slope * math.log10(c), c))
    assert sorted(sweep.extended) == extended and sweep.edge == edge
    sweep = sweep_c(lambda c: (slope * math.log10(c), c), limits=(0.01, 100))  # no room to extend at all
    assert sweep.extended == [] and sweep.edge == edge


def test_ties_go_to_the_smallest_c_the_strongest_penalty():
    sweep = sweep_c(lambda c: (1.0 if c >= 1 else 0.5, c), grid=(0.1, 1, 10, 100))
    assert sweep.chosen == 1.0 and sweep.edge == "interior"


def test_a_grid_of_fewer_than_four_points_or_outside_the_limits_is_refused():
    with pytest.raises(MTLError, match="at least 4"):
        check_grid([0.1, 1, 10])
    with pytest.raises(MTLError, match="outside the limits"):
        check_grid([0.1, 1, 10, 1e6])


def test_fits_that_do_not_converge_are_marked():
    def warns(c):
        if c > 1:
            warnings.warn("stopped early", ConvergenceWarning, stacklevel=2)
        return -abs(math.log10(c)), c

    sweep = sweep_c(warns)
    assert sweep.table["converged"].tolist() == [True, True, True, False, False]


# ---------------------------------------------------------------- the baseline on real data

TRAIN = 400


@pytest.fixture(scope="module")
def real():
    data_dir()
    tasks = [load_task("sst2", max_train=TRAIN), load_task("trec", max_train=TRAIN)]
    rt = load_task("rotten_tomatoes", max_train=1, max_eval=200)
    return tasks, rt, tfidf_baseline(tasks, ood=[("sst2", rt)])


def majority_share(task, split: str) -> float:
    labels = [r["label"] for r in task.splits[split]]
    return np.bincount(labels).max() / len(labels)


@pytest.mark.slow
def test_the_baseline_is_clearly_above_the_majority_class(real):
    tasks, _, baseline = real
    summary = baseline.summary()
    for task in tasks:
        accuracy = summary.loc[task.name, "validation accuracy"]
        assert accuracy > majority_share(task, "validation") + 0.08, (task.name, accuracy)
        fit = baseline.fits[task.name]
        assert fit.table.loc[fit.chosen, "validation accuracy"] == pytest.approx(accuracy)
        assert fit.edge == "interior" or fit.edge.startswith("edge: ")
        assert len(fit.table) >= len(C_GRID)
    assert set(baseline.record.extra["edge"]) == {"sst2", "trec"}


@pytest.mark.slow
def test_the_record_has_one_outcome_per_held_out_row_with_their_digest(real):
    tasks, rt, baseline = real
    record = RunRecord.from_json(baseline.record.to_json())  # survives a round trip through its file format
    assert (record.scenario, record.model, record.seed) == (SCENARIO, MODEL, 0)
    for task in tasks:
        for split in ("validation", "test"):
            rows = task.splits[split]
            assert len(record.outcome_array(task.name, split)) == len(rows)
            assert record.examples[split][task.name] == examples_digest(rows)
            assert record.metric(task.name, split) == pytest.approx(record.outcome_array(task.name, split).mean())
    assert len(record.outcome_array("sst2", "ood:rotten_tomatoes")) == len(rt.splits["test"])
    assert record.examples["ood:rotten_tomatoes"]["sst2"] == examples_digest(rt.splits["test"])


def fake_arm(tasks, seeds, rng, splits=("validation", "test")) -> list[RunRecord]:
    """A trained arm's records as from_outcomes builds them: about 80% of rows right, varying by seed."""
    records = []
    for seed in seeds:
        results = {
            split: {
                t.name: TaskEvaluation(
                    t.name, split, "sentence", {}, (rng.random(len(t.splits[split])) < 0.75 + 0.02 * seed), 0.0
                )
                for t in tasks
            }
            for split in splits
        }
        for per in results.values():
            for result in per.values():
                result.outcomes = result.outcomes.astype(np.int8)
                result.metrics = {"accuracy": float(result.outcomes.mean())}
        records.append(RunRecord.from_outcomes("fake-arm", "cpu", seed, "m", {t.name: t for t in tasks}, results))
    return records


@pytest.mark.slow
def test_compare_takes_the_one_run_baseline_against_a_five_seed_arm(real):
    tasks, _, baseline = real
    arm = fake_arm(tasks, range(5), np.random.default_rng(0))
    result = compare(arm, [baseline.record], split="test")
    assert all(map(math.isfinite, (result.effect, result.low, result.high, result.df)))
    assert result.low < result.effect < result.high and result.seeds_b == 1 and not result.paired
    assert result.outcome in ("higher", "lower", "equivalent", "unresolved")
    # Copies of the deterministic record under the arm's seeds (paired) give the same interval: not needed.
    copies = [RunRecord.from_json({**baseline.record.to_json(), "seed": s}) for s in range(5)]
    paired = compare(arm, copies, split="test")
    assert paired.paired
    assert (paired.effect, paired.low, paired.high) == pytest.approx((result.effect, result.low, result.high))
    per_task = compare(arm, [baseline.record], split="validation", tasks=["trec"])
    assert math.isfinite(per_task.low) and math.isfinite(per_task.high)


@pytest.mark.slow
def test_compare_takes_the_baseline_against_a_trainer_record_of_the_same_rows(real, tokenizer):
    tasks, _, baseline = real
    trainer = Trainer(tiny_model(tasks), tokenizer, tasks, TrainConfig(eval_batch_size=128, progress=False))
    trained = trainer.result("tiny", "cpu", ("validation", "test"))
    result = compare([baseline.record], [trained], split="test")  # one run each: the paired bootstrap
    assert math.isfinite(result.low) and result.low <= result.effect <= result.high


@pytest.mark.slow
def test_no_held_out_text_reached_the_rows_the_baseline_was_fitted_on(real):
    tasks, _, baseline = real
    for task in tasks:
        fit = baseline.fits[task.name]
        train = task.splits["train"]
        assert fit.train_rows == TRAIN and fit.train_digest == examples_digest(train)
        train_texts = [r["text"] for r in train]
        for split in ("validation", "test"):
            held = [r["text"] for r in task.splits[split]]
            assert not rows_sharing_text(train_texts, held), (task.name, split)
        # The vocabulary was built from training text only: no word seen only in test is in it.
        word_vectorizer = fit.pipeline.named_steps["features"].transformer_list[0][1]
        analyse = word_vectorizer.build_analyzer()
        seen = {w for text in train_texts for w in analyse(text)}
        test_only = {w for r in task.splits["test"] for w in analyse(r["text"])} - seen
        assert test_only and test_only.isdisjoint(word_vectorizer.vocabulary_)


@pytest.mark.slow
def test_token_tasks_and_foreign_labels_are_refused(real):
    with pytest.raises(MTLError, match="token-level"):
        fit_tfidf(SimpleNamespace(name="conll2003", level="token"))
    tasks, rt, baseline = real
    with pytest.raises(MTLError, match="labels"):
        score_ood_rows(baseline.record, baseline.fits, {t.name: t for t in tasks}, [("trec", rt)])
    with pytest.raises(MTLError, match="not among"):
        score_ood_rows(baseline.record, baseline.fits, {t.name: t for t in tasks}, [("ag_news", rt)])
