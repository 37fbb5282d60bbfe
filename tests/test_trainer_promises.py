"""What the Trainer promises and used to break silently: the optimizer follows every freeze, every
gradual-unfreezing stage runs, the record names what trained at the rate it got, scores belong to
the weights they were computed on, a failed fit is told apart from an interrupted one, and bad
settings are refused before training."""

from __future__ import annotations

import copy

import pytest

import mtl_helpers
from mtl_helpers import (
    Callback,
    GradualUnfreezing,
    MTLError,
    MultiTaskModel,
    Trainer,
    TrainConfig,
    changed_groups,
    freeze,
    snapshot,
    ulmfit_stages,
)
from mtl_helpers.batches import to_device
from mtl_helpers.distill import DistillationTrainer
from mtl_helpers.evaluation import weights_key
from mtl_helpers.recipes import Recipe

FAST = dict(batch_size=16, eval_batch_size=64, progress=False)


def first_batch(trainer, task):
    return to_device(next(iter(trainer._loader(task, "train", shuffle=False))), trainer.device)


# ---------------------------------------------------------------- 1. freezing outside the trainer


def test_unfreezing_on_the_model_after_the_trainer_is_built_is_refused_until_the_trainer_adopts_it(
    make_model, tokenizer, trec, sst2
):
    model = make_model([trec, sst2])
    freeze(model, "backbone")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(lr=1e-2, eval_every=None, **FAST))
    mtl_helpers.unfreeze(model, "layer.1")  # the module-level function: the optimizer cannot know
    with pytest.raises(
        MTLError,
        match=r"\['layer.1'\] became trainable but are not in the optimizer.*"
        r"trainer.unfreeze\('layer.1'\)",
    ):
        trainer.fit(0.5)
    with pytest.raises(MTLError, match=r"trainer.unfreeze\('layer.1'\)"):
        trainer.step("trec", first_batch(trainer, "trec"))
    assert trainer.global_step == 0 and all(p.grad is None for p in model.parameters())
    trainer.unfreeze("layer.1")  # the fix the message names
    before = snapshot(model)
    trainer.fit(0.5)
    assert not changed_groups(model, before).loc["layer.1", "bitwise identical"]
    assert all(p.grad is None for p in model.parameters())


def test_freezing_on_the_model_after_the_trainer_is_built_is_refused(make_model, tokenizer, trec):
    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(eval_every=None, **FAST))
    freeze(model, "layer.2")  # still in the optimizer: it would sit there, never stepped, counted as trained
    with pytest.raises(
        MTLError,
        match=r"\['layer.2'\] were frozen but are still in the optimizer.*"
        r"trainer.freeze\('layer.2'\)",
    ):
        trainer.fit(0.5)
    assert trainer.global_step == 0
    trainer.freeze("layer.2")
    trainer.fit(0.5)
    assert "layer.2" not in trainer.trained_groups and "layer.1" in trainer.trained_groups


# ---------------------------------------------------------------- 2. every gradual-unfreezing stage runs


def test_gradual_unfreezing_with_fewer_steps_than_stages_is_refused_before_training(make_model, tokenizer, trec):
    model = make_model([trec])
    stages = ulmfit_stages(model, n_stages=3, epochs_per_stage=0.25)  # 96 rows at batch 48: 2 steps for 3 stages
    trainer = Trainer(
        model,
        tokenizer,
        [trec],
        TrainConfig(batch_size=48, eval_every=None, progress=False),
        callbacks=[GradualUnfreezing(stages)],
    )
    before = snapshot(model)
    with pytest.raises(
        MTLError,
        match=r"3 stages but this fit has only 2 optimizer steps .*stage 2 .*would get none.*"
        r"more epochs.*fewer stages",
    ):
        trainer.fit(0.75)
    assert trainer.global_step == 0 and changed_groups(model, before)["bitwise identical"].all()


def test_a_gradual_recipe_too_short_for_its_stages_is_refused(monkeypatch, tokenizer):
    from conftest import tiny_bert

    from mtl_helpers import get_profile, load_task, recipes

    monkeypatch.setattr(recipes, "fresh_encoder", lambda recipe, seed: (tiny_bert(seed=seed), tokenizer))
    tasks = [load_task(name, max_train=40, max_eval=16) for name in ("trec", "sst2")]  # 3 + 3 batches of 16
    with pytest.raises(MTLError, match=r"4 stages but this fit has only 3 optimizer steps"):
        recipes.train_recipe(Recipe(gradual=4, epochs=0.5, batch_size=16), tasks, 0, get_profile("smoke"))


# ---------------------------------------------------------------- 3. what the record says trained


def test_trained_groups_are_those_updated_at_the_highest_rate_they_got(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(lr=1e-2, eval_every=None, **FAST))
    trainer.freeze("backbone")  # after the trainer was built, before any step: never trained
    trainer.fit(0.5, tasks=["trec"])  # head.sst2 sits in the optimizer but gets no gradient
    assert set(trainer.trained_groups) == {"head.trec"}
    trainer.scale_rates(0.1)
    trainer.fit(1)
    steps = trainer.history.steps
    for head in ("trec", "sst2"):
        applied = [s["lr"][f"head.{head}"] for s in steps if s["task"] == head]
        assert trainer.trained_groups[f"head.{head}"] == max(applied)
    assert trainer.trained_groups["head.trec"] > 0.1 * 1e-2  # the first fit's peak, not the lowered one
    assert set(trainer.result("trained", "smoke", splits=()).trained) == {"head.trec", "head.sst2"}


# ---------------------------------------------------------------- 4. scores belong to the weights


def test_scores_follow_the_weights_not_the_step_count(make_model, tokenizer, trec, monkeypatch):
    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(lr=1e-2, **FAST))  # evaluates at the end of each fit
    assert trainer.optimizer.defaults.get("fused")  # the fused kernel's in-place steps must bump the version counters
    trainer.fit(1)
    kept = copy.deepcopy(model.state_dict())
    trainer.fit(1)
    trained_more = trainer.evaluate()["trec"]
    model.load_state_dict(kept)
    reference = copy.deepcopy(model)
    fresh = Trainer(reference, tokenizer, [trec], TrainConfig(**FAST)).evaluate_outcomes()["trec"]
    mine = trainer.evaluate_outcomes()["trec"]
    assert mine.metrics == fresh.metrics and (mine.outcomes == fresh.outcomes).all()
    assert trained_more["loss"] != fresh.metrics["loss"]  # so a stale score would have shown

    calls = []
    scorer = mtl_helpers.evaluation.evaluate_task  # what every scoring path (score_rows, score_task) runs
    monkeypatch.setattr(mtl_helpers.evaluation, "evaluate_task", lambda *a, **k: calls.append(1) or scorer(*a, **k))
    model.eval()
    assert trainer.evaluate() == {"trec": fresh.metrics} and not calls  # the mode is no part of the weights
    model.train()
    assert trainer.evaluate() == {"trec": fresh.metrics} and not calls
    other = Trainer(model, tokenizer, [trec], TrainConfig(lr=1e-2, eval_every=None, **FAST))
    other.fit(0.5)  # another trainer's fused AdamW steps change the weights in place
    assert trainer.evaluate() == other.evaluate() and len(calls) == 2


def test_optimizer_steps_and_load_state_dict_change_the_cache_key(make_model, tokenizer, trec):
    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(eval_every=None, **FAST))
    start = weights_key(trainer.model)
    kept = copy.deepcopy(model.state_dict())
    trainer.step("trec", first_batch(trainer, "trec"))
    stepped = weights_key(trainer.model)
    model.load_state_dict(kept)
    assert len({start, stepped, weights_key(trainer.model)}) == 3


# ---------------------------------------------------------------- 5. failed is not interrupted


def test_a_fit_that_fails_before_its_first_step_is_not_an_interruption(make_model, tokenizer, trec):
    model = make_model([trec])
    freeze(model, "all")
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(**FAST))
    with pytest.raises(MTLError, match="Nothing is trainable"):
        trainer.fit()
    assert trainer.history.fits[-1]["outcome"] == "failed" and not trainer.history.interrupted
    trainer.unfreeze("heads")
    trainer.fit(0.5)
    assert not trainer.history.ever_interrupted and not trainer.result("once-failed", "smoke", splits=()).interrupted


def test_an_error_after_a_step_counts_as_an_interruption(make_model, tokenizer, trec):
    class Fail(Callback):
        def on_step_end(self, trainer, step):
            if trainer.global_step == 2:
                raise RuntimeError("a callback broke")

    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(eval_every=None, **FAST), callbacks=[Fail()])
    with pytest.raises(RuntimeError, match="a callback broke"):
        trainer.fit()
    assert trainer.history.fits[-1]["outcome"] == "interrupted"
    trainer.callbacks.pop()
    trainer.fit(0.5)
    assert not trainer.history.interrupted and trainer.history.ever_interrupted


# ---------------------------------------------------------------- 6. a task with nothing trainable


def test_a_task_whose_path_is_all_frozen_is_refused_at_fit_start(make_model, tokenizer, trec, sst2):
    class Started(Callback):
        ran = False

        def on_fit_start(self, trainer):
            Started.ran = True

    model = make_model([trec, sst2])
    freeze(model, "backbone", "head.sst2")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(eval_every=None, **FAST), callbacks=[Started()])
    with pytest.raises(
        MTLError,
        match=r"Task 'sst2' has nothing trainable.*trainer.fit\(tasks=\['trec'\]\).*"
        r"trainer.unfreeze\('head.sst2'\)",
    ):
        trainer.fit()
    assert Started.ran and trainer.global_step == 0 and not trainer.history.ever_interrupted
    with pytest.raises(MTLError, match=r"loss of task 'sst2' reaches no trainable parameter"):
        trainer.step("sst2", first_batch(trainer, "sst2"))
    trainer.fit(0.5, tasks=["trec"])
    assert trainer.global_step == 3


# ---------------------------------------------------------------- 7. seeds numpy accepts


def test_a_seed_beyond_numpys_range_is_refused():
    with pytest.raises(ValueError, match=r"seed=4294967296 \(allowed: an integer from 0 to 2\*\*32 - 1"):
        TrainConfig(seed=2**32)


def test_the_largest_seed_fits_twice(make_model, tokenizer, trec):
    trainer = Trainer(make_model([trec]), tokenizer, [trec], TrainConfig(seed=2**32 - 1, eval_every=None, **FAST))
    trainer.fit(0.5)
    trainer.fit(0.5)  # the second fit's derived seed wraps around instead of leaving numpy's range
    assert trainer.global_step == 6 and not trainer.history.ever_interrupted


# ---------------------------------------------------------------- 8. recipes that contradict themselves


@pytest.mark.parametrize(
    "fields, named",
    [
        (dict(lp_epochs=0.5, gradual=3), r"lp_epochs=0.5, gradual=3.*set lp_epochs=0 .*or gradual=0"),
        (dict(lp_epochs=2.0, epochs=2.0), r"lp_epochs=2.0, epochs=2.0.*lower lp_epochs or raise epochs"),
        (dict(gradual=1), r"gradual=1.*0 \(none\) or an integer >= 2"),
        (dict(gradual=3, stage_scales=(1.0, 0.5)), r"stage_scales=\(1.0, 0.5\), gradual=3.*one rate scale per"),
        (dict(stage_scales=(1.0,)), r"gradual=0.*stage_scales=None"),
    ],
)
def test_a_recipe_that_contradicts_itself_is_refused_at_construction(fields, named):
    with pytest.raises(MTLError, match=named):
        Recipe(**fields)
    with pytest.raises(MTLError, match=named):
        Recipe().with_(**fields)


# ---------------------------------------------------------------- 9. a teacher of its own


@pytest.mark.parametrize(
    "make_teacher",
    [
        copy.copy,  # a shallow copy: the same modules
        lambda m: MultiTaskModel(m.encoder, copy.deepcopy(dict(m.heads))),  # new heads around the same encoder
    ],
)
def test_a_teacher_sharing_tensors_with_the_student_is_refused(make_model, tokenizer, trec, sst2, make_teacher):
    model = make_model([trec, sst2])
    with pytest.raises(MTLError, match=r"teacher shares \d+ tensors with the student.*teacher=None.*copy.deepcopy"):
        DistillationTrainer(
            model, tokenizer, [trec, sst2], TrainConfig(**FAST), protect="trec", teacher=make_teacher(model)
        )
    assert all(p.requires_grad for p in model.parameters())
    DistillationTrainer(
        model, tokenizer, [trec, sst2], TrainConfig(**FAST), protect="trec", teacher=copy.deepcopy(model)
    )
