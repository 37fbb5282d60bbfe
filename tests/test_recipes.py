"""Recipes: per-step learning rates kept in the record (and read back for the rate figure), and
out-of-distribution scores stored so that the noise rule can compare them."""

from __future__ import annotations

import pytest

from mtl_helpers import compare, load_task
from mtl_helpers.errors import MTLError
from mtl_helpers.recipes import Recipe, rate_history, run_recipe


GRADUAL = Recipe(
    gradual=3, head_lr=1e-2, backbone_lr=1e-3, factor=2.0, epochs=1.5, batch_size=16, stage_scales=(1.0, 0.5, 0.25)
)


def test_keep_rates_stores_the_rate_of_every_group_at_every_step(tiny_recipes, trec, sst2):
    [record] = run_recipe("keep-rates", GRADUAL, [trec, sst2], [0], tiny_recipes, keep_rates=True, log=None)
    assert len(record.extra["rates"]) == record.budget["steps"]
    rates = rate_history(record).lr_frame()
    heads = ["head.trec", "head.trec/no_decay", "head.sst2", "head.sst2/no_decay"]
    first, last = rates.iloc[0], rates.iloc[-1]
    assert first[heads].notna().all() and first.drop(heads).isna().all()  # stage 1: the heads alone
    assert last.notna().all()  # the last stage: everything, embeddings included
    assert rates["head.trec"].max() == pytest.approx(1e-2)  # stage 1's peak; later stages are scaled down
    assert rates["embeddings"].max() <= 0.25 * 1e-3 / 2.0**3 + 1e-12  # bottom depth, last stage's scale


def test_kept_rates_survive_reuse_and_a_run_without_them_is_not_reused(tiny_recipes, trec, sst2):
    messages = []
    [plain] = run_recipe("keep-rates", GRADUAL, [trec, sst2], [0], tiny_recipes, log=messages.append)
    assert "rates" not in plain.extra
    with pytest.raises(MTLError, match="keep_rates=True"):
        rate_history(plain)
    [kept] = run_recipe("keep-rates", GRADUAL, [trec, sst2], [0], tiny_recipes, keep_rates=True, log=messages.append)
    [again] = run_recipe("keep-rates", GRADUAL, [trec, sst2], [0], tiny_recipes, keep_rates=True, log=messages.append)
    assert ["reused" in m for m in messages] == [False, False, True]
    assert again.extra["rates"] == kept.extra["rates"]


def test_ood_scores_are_stored_with_outcomes_for_the_noise_rule(tiny_recipes, trec, sst2):
    rotten = load_task("rotten_tomatoes", max_train=1, max_eval=24)
    recipe = Recipe(train=("heads",), head_lr=1e-2, epochs=0.5, batch_size=16)
    records = run_recipe("ood-scores", recipe, [trec, sst2], [0], tiny_recipes, ood=[("sst2", rotten)], log=None)
    for record in records:
        assert 0 <= record.metric("sst2", "ood:rotten_tomatoes") <= 1
        assert len(record.outcome_array("sst2", "ood:rotten_tomatoes")) == 24
    same = compare(records, records, split="ood:rotten_tomatoes", tasks=["sst2"])
    assert same.effect == 0 and not same.differs
    with pytest.raises(MTLError, match="labels"):
        run_recipe("ood-wrong-labels", recipe, [trec, sst2], [0], tiny_recipes, ood=[("sst2", trec)], log=None)


def test_the_rate_figure_lists_groups_from_the_top_down(tiny_recipes, trec, sst2):
    import matplotlib

    matplotlib.use("Agg")
    from mtl_helpers.plots import plot_lr_groups

    [record] = run_recipe("keep-rates", GRADUAL, [trec, sst2], [0], tiny_recipes, keep_rates=True, log=None)
    ax = plot_lr_groups(rate_history(record))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["head.sst2", "head.trec", "layer.2", "layer.1", "layer.0", "embeddings"]


HEADS = Recipe(train=("heads",), head_lr=1e-2, epochs=0.5, batch_size=16)


def test_a_stored_run_without_a_requested_split_is_not_reused(tiny_recipes, trec, sst2):
    messages = []
    [first] = run_recipe("splits", HEADS, [trec, sst2], [0], tiny_recipes, splits=("validation",), log=messages.append)
    [both] = run_recipe(
        "splits", HEADS, [trec, sst2], [0], tiny_recipes, splits=("validation", "test"), log=messages.append
    )
    assert ["reused" in m for m in messages] == [False, False]
    assert 0 <= both.metric("trec", "test") <= 1 and both.metric("trec") == first.metric("trec")


def test_a_stored_run_of_the_tasks_in_another_order_is_not_reused(tiny_recipes, trec, sst2):
    messages = []
    run_recipe("task-order", HEADS, [trec, sst2], [0], tiny_recipes, log=messages.append)
    [swapped] = run_recipe("task-order", HEADS, [sst2, trec], [0], tiny_recipes, log=messages.append)
    [again] = run_recipe("task-order", HEADS, [sst2, trec], [0], tiny_recipes, log=messages.append)
    assert ["reused" in m for m in messages] == [False, False, True]
    assert list(swapped.tasks) == list(again.tasks) == ["sst2", "trec"]


def test_ood_scores_name_the_examples_they_were_scored_on(tiny_recipes, trec, sst2):
    from mtl_helpers.records import examples_digest

    rotten = load_task("rotten_tomatoes", max_train=1, max_eval=24)
    [record] = run_recipe("ood-digest", HEADS, [trec, sst2], [0], tiny_recipes, ood=[("sst2", rotten)], log=None)
    assert record.examples["ood:rotten_tomatoes"] == {"sst2": examples_digest(rotten.splits["test"])}
    assert record.examples["validation"] == {t.name: examples_digest(t.splits["validation"]) for t in (trec, sst2)}


def test_restore_best_keeps_the_weights_of_the_best_validation_epoch(tiny_recipes, trec, sst2):
    """The run's record scores the weights of the epoch with the best mean validation accuracy, found
    among the per-epoch evaluations it stores; a run without it is another spec, never reused for it."""
    recipe = Recipe(head_lr=3e-2, backbone_lr=1e-3, epochs=4, batch_size=16, pretrained=False)
    [last] = run_recipe("restore-best", recipe, [trec, sst2], [0], tiny_recipes, log=None)
    best_recipe = recipe.with_(restore_best=True)
    assert "restore_best" in best_recipe.spec([trec])["recipe"] and "restore_best" not in recipe.spec([trec])["recipe"]
    [best] = run_recipe("restore-best", best_recipe, [trec, sst2], [0], tiny_recipes, log=None)
    evals = [e for e in best.extra["evals"] if e["split"] == "validation"]
    by_step = {}
    for e in evals:
        by_step.setdefault(e["step"], []).append(e["accuracy"])
    assert len(by_step) == 4  # one evaluation per epoch
    means = {step: sum(v) / len(v) for step, v in by_step.items()}
    chosen = best.extra["best"]
    assert chosen["validation"] == pytest.approx(max(means.values()))
    assert chosen["step"] == min(s for s, m in means.items() if m == max(means.values()))  # ties: the earlier
    assert best.mean_metric("validation") == pytest.approx(chosen["validation"])
    assert best.budget["steps"] == last.budget["steps"]  # every step taken is counted
    assert best.mean_metric("validation") >= last.mean_metric("validation") - 1e-9


def test_restore_best_is_refused_with_two_fits():
    with pytest.raises(MTLError, match="restore_best"):
        Recipe(epochs=2, lp_epochs=1, restore_best=True)
