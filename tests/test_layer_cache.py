"""Caching the frozen lower layers changes nothing but the work done: the same losses, parameters and
scores as the uncached run, for sentence and token tasks, at every gradual-unfreezing stage; the frozen
part runs once per data set and level, across epochs and trainers, and again only when its weights
change; what cannot be cached exactly is refused."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DistilBertConfig, DistilBertModel, MPNetConfig, MPNetModel, RobertaConfig, RobertaModel

from conftest import data_dir, tiny_bert
from mtl_helpers import (
    Callback,
    GradualUnfreezing,
    MTLError,
    PROFILES,
    MultiTaskModel,
    Trainer,
    TrainConfig,
    load_task,
    score_task,
    snapshot,
    top_groups,
    train_only,
    ulmfit_stages,
)
from mtl_helpers.batches import to_device
from mtl_helpers.distill import DistillationTrainer
from mtl_helpers.layer_cache import LayerCache, clear_shared, frozen_level
from mtl_helpers.recipes import Recipe, build_trainer

FAST = dict(batch_size=16, eval_batch_size=64, progress=False, eval_every=None, lr=1e-3)
ATOL = 1e-5


@pytest.fixture(scope="module")
def conll():
    data_dir()
    return load_task("conll2003", max_train=80, max_eval=24)


class Levels(Callback):
    """The cached level in force at every step (read at its end, before any callback changes it)."""

    order = -100

    def __init__(self):
        self.seen = []

    def on_step_end(self, trainer, step):
        self.seen.append(frozen_level(trainer.model))


def model_for(tasks, k: int, attention: str | None = None) -> MultiTaskModel:
    encoder = tiny_bert(3)
    if attention:
        encoder.set_attn_implementation(attention)
    torch.manual_seed(0)
    model = MultiTaskModel.for_tasks(encoder, tasks)
    train_only(model, *top_groups(model, k), "heads")
    return model


def run(model, tokenizer, tasks, cached: bool, epochs: float, callbacks=(), **config) -> Trainer:
    settings = {**FAST, **config}
    trainer = Trainer(
        model, tokenizer, tasks, TrainConfig(cache_frozen_layers=cached, **settings), callbacks=list(callbacks)
    )
    trainer.fit(epochs)
    return trainer


def losses(trainer: Trainer) -> torch.Tensor:
    return torch.tensor([float(s["loss"]) for s in trainer.history.steps])


def assert_same_run(plain: Trainer, cached: Trainer) -> None:
    assert len(plain.history.steps) == len(cached.history.steps) >= 5
    torch.testing.assert_close(losses(cached), losses(plain), atol=ATOL, rtol=0)
    for (name, a), b in zip(plain.model.named_parameters(), cached.model.parameters()):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=0, msg=name)


def assert_same_scores(plain: dict, cached: dict) -> None:
    assert cached.keys() == plain.keys()
    for task, metrics in plain.items():
        assert cached[task] == pytest.approx(metrics, abs=ATOL), task


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("level", ["sentence", "token"])
def test_cached_training_and_scores_equal_the_uncached_ones(make_model, tokenizer, trec, conll, level, k):
    task = trec if level == "sentence" else conll
    start = model_for([task], k)
    before = snapshot(start)
    frozen = [n for n, p in start.named_parameters() if not p.requires_grad]
    levels = Levels()
    plain = run(copy.deepcopy(start), tokenizer, [task], False, 5 / 6 if task is trec else 1.0)
    cached = run(copy.deepcopy(start), tokenizer, [task], True, 5 / 6 if task is trec else 1.0, [levels])
    assert isinstance(cached.data, LayerCache) and levels.seen == [4 - k] * len(levels.seen)  # 3 layers
    assert_same_run(plain, cached)
    for trainer in (plain, cached):  # frozen tensors bitwise unchanged in both runs
        params = dict(trainer.model.named_parameters())
        assert all(torch.equal(params[n], before[n]) for n in frozen)
    assert_same_scores(plain.evaluate(), cached.evaluate())
    alone = score_task(cached.model, tokenizer, task, batch_size=64, cache_frozen_layers=True)
    assert_same_scores(plain.evaluate(), {task.name: alone.metrics})


def test_eager_attention_and_two_tasks_in_one_run(tokenizer, trec, conll):
    """The mask the eager implementation adds (not sdpa's boolean one), a sentence and a token task mixed."""
    start = model_for([trec, conll], 1, attention="eager")
    plain = run(copy.deepcopy(start), tokenizer, [trec, conll], False, 0.5)
    cached = run(copy.deepcopy(start), tokenizer, [trec, conll], True, 0.5)
    assert_same_run(plain, cached)
    assert_same_scores(plain.evaluate(), cached.evaluate())


def test_roberta_positions_from_padded_ids_cache_exactly_too(tokenizer, trec):
    config = RobertaConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, vocab_size=30522
    )
    torch.manual_seed(0)
    start = MultiTaskModel.for_tasks(RobertaModel(config), [trec])
    train_only(start, "layer.2", "heads")
    plain = run(copy.deepcopy(start), tokenizer, [trec], False, 5 / 6)
    cached = run(copy.deepcopy(start), tokenizer, [trec], True, 5 / 6)
    assert cached.data.level() == 3
    assert_same_run(plain, cached)


def test_gradual_unfreezing_moves_the_cache_with_every_stage(tokenizer, trec, conll):
    start = model_for([trec, conll], 0)
    runs = {}
    for cached in (False, True):
        model = copy.deepcopy(start)
        stages = ulmfit_stages(model, n_stages=4, epochs_per_stage=0.25)  # heads, +layer.2, +layer.1, +layer.0,emb
        levels = Levels()
        callbacks = [GradualUnfreezing(stages), levels]
        runs[cached] = (run(model, tokenizer, [trec, conll], cached, 1.0, callbacks, eval_every=0.5), levels.seen)
    (plain, _), (cached, seen) = runs[False], runs[True]
    assert sorted(set(seen), reverse=True) == [4, 3, 2, 0]  # all frozen, then the cache follows each stage
    assert seen == sorted(seen, reverse=True)
    assert_same_run(plain, cached)
    assert len(plain.history.evals) == len(cached.history.evals) > 2
    for a, b in zip(plain.history.evals, cached.history.evals):
        assert b == pytest.approx(a, abs=ATOL)  # epoch, step, stage, task, split, metrics


def test_freezing_more_mid_run_moves_the_cache_up(tokenizer, trec):
    class FreezeMore(Callback):
        def on_step_end(self, trainer, step):
            if trainer.step_in_fit == 3:
                trainer.freeze("layer.1")

    start = model_for([trec], 2)
    levels = Levels()
    plain = run(copy.deepcopy(start), tokenizer, [trec], False, 1.0, [FreezeMore()])
    cached = run(copy.deepcopy(start), tokenizer, [trec], True, 1.0, [FreezeMore(), levels])
    assert levels.seen[:3] == [2, 2, 2] and set(levels.seen[3:]) == {3}  # layer.1, trained 3 steps, now cached
    assert_same_run(plain, cached)


def test_the_frozen_layers_run_once_per_data_set_across_epochs_and_trainers(tokenizer, trec):
    clear_shared()
    start = model_for([trec], 1)
    calls = []
    counter = lambda *_: calls.append(1)  # noqa: E731

    class Count(Callback):
        def __init__(self):
            self.at_epoch_end = []

        def on_epoch_end(self, trainer):
            self.at_epoch_end.append(len(calls))

    first = copy.deepcopy(start)
    first.encoder.encoder.layer[0].register_forward_hook(counter)
    count = Count()
    trainer = run(first, tokenizer, [trec], True, 2.0, [count])
    assert count.at_epoch_end[0] > 0 and count.at_epoch_end == [count.at_epoch_end[0]] * 2  # no run in epoch 2
    trainer.evaluate()
    after_validation = len(calls)
    assert after_validation > count.at_epoch_end[0]  # the validation rows: once
    trainer.fit(1.0)
    trainer.evaluate()  # new weights above the frozen part: scored again, without the frozen layers
    assert len(calls) == after_validation

    second = copy.deepcopy(start)  # another trainer, other heads, the same frozen weights
    second.heads["trec"].classifier.reset_parameters()
    second.encoder.encoder.layer[0].register_forward_hook(counter)
    other = run(second, tokenizer, [trec], True, 1.0, seed=1)
    other.evaluate()
    assert len(calls) == after_validation

    with torch.no_grad():  # a frozen weight changes in place: its states are computed again, never served stale
        second.encoder.encoder.layer[0].output.dense.weight.mul_(1.5)
    other.fit(1.0)
    assert len(calls) > after_validation
    batch = to_device(next(iter(other._loader("trec", "validation", shuffle=False))), other.device)
    fresh = copy.deepcopy(second)
    fresh.eval()
    with torch.no_grad():
        live = fresh.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        cached = second.eval().token_states(batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(cached[real], live.last_hidden_state[real], atol=ATOL, rtol=0)


def test_below_two_frozen_groups_the_run_is_not_cached(tokenizer, trec):
    model = model_for([trec], 3)  # every layer trains; only the embeddings are frozen
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(cache_frozen_layers=True, **FAST))
    batch = next(iter(trainer._loader("trec", "train", shuffle=False)))
    assert "hidden_states" not in batch and "input_ids" in batch


def test_a_batch_collated_before_an_unfreeze_is_refused(tokenizer, trec):
    trainer = Trainer(model_for([trec], 1), tokenizer, [trec], TrainConfig(cache_frozen_layers=True, **FAST))
    batch = next(iter(trainer._loader("trec", "train", shuffle=False)))
    assert batch["cache_level"] == 3 and batch["hidden_states"].dtype == torch.float32
    trainer.unfreeze("layer.1")
    with pytest.raises(MTLError, match="trainable now.*collate it again"):
        trainer.step("trec", batch)


def test_bf16_autocast_keeps_float32_states_and_the_run(tokenizer, trec):
    start = model_for([trec], 1)
    plain = run(copy.deepcopy(start), tokenizer, [trec], False, 5 / 6, precision="bf16")
    cached = run(copy.deepcopy(start), tokenizer, [trec], True, 5 / 6, precision="bf16")
    batch = next(iter(cached._loader("trec", "train", shuffle=False)))
    assert batch["hidden_states"].dtype == torch.float32  # what LayerNorm hands the next layer under autocast
    torch.testing.assert_close(losses(cached), losses(plain), atol=1e-2, rtol=0)


def test_refusals_name_the_problem(tokenizer, trec):
    model = model_for([trec], 1)
    model.dropout_in_frozen = True
    with pytest.raises(MTLError, match=r"dropout_in_frozen=True.*cache_frozen_layers=False"):
        Trainer(model, tokenizer, [trec], TrainConfig(cache_frozen_layers=True, **FAST))

    small = dict(vocab_size=30522, max_position_embeddings=128, num_attention_heads=2)
    distil = DistilBertModel(DistilBertConfig(dim=32, n_layers=3, n_heads=2, hidden_dim=64, vocab_size=30522))
    mpnet = MPNetModel(MPNetConfig(hidden_size=32, num_hidden_layers=3, intermediate_size=64, **small))
    for encoder, why in ((distil, "no `embeddings` module"), (mpnet, "relative_attention_bias")):
        model = MultiTaskModel.for_tasks(encoder, [trec])
        train_only(model, "layer.2", "heads")
        with pytest.raises(MTLError, match=rf"{type(encoder).__name__}: .*{why}.*cache_frozen_layers=False"):
            Trainer(model, tokenizer, [trec], TrainConfig(cache_frozen_layers=True, **FAST))

    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    with pytest.raises(MTLError, match="pads on the right"):
        Trainer(model_for([trec], 1), left, [trec], TrainConfig(cache_frozen_layers=True, **FAST))
    with pytest.raises(ValueError, match="cache_frozen_layers=True"):
        TrainConfig(cache_features=True, cache_frozen_layers=True)
    with pytest.raises(MTLError, match="teacher would read the student's cached"):
        DistillationTrainer(
            model_for([trec, conll_like(trec)], 1),
            tokenizer,
            [trec, conll_like(trec)],
            TrainConfig(cache_frozen_layers=True, **FAST),
            protect="trec",
        )


def conll_like(task):
    clone = copy.copy(task)
    clone.name = "other"
    return clone


def test_the_recipe_names_the_setting_only_when_on_and_passes_it(tokenizer, trec):
    plain = Recipe(train=("layer.1", "heads"), n_layers=2)
    cached = plain.with_(cache_frozen_layers=True)
    assert "cache_frozen_layers" not in plain.spec([trec])["recipe"]  # earlier stored runs keep their fingerprint
    assert cached.spec([trec])["recipe"]["cache_frozen_layers"] is True
    trainer = build_trainer(cached, [trec], 0, PROFILES["smoke"])
    assert trainer.config.cache_frozen_layers and isinstance(trainer.data, LayerCache)
    assert trainer.data.level() == 2  # the embeddings and layer.0 of the two kept layers


def test_lora_in_the_top_layers_caches_the_plain_layers_below_exactly(tokenizer, trec):
    """LoRA on the top k blocks only (peft's layers_to_transform): the blocks below hold no adapter, so
    they are cached; the cached run trains the adapters and the head exactly as the uncached one, and
    leaves every pretrained weight bitwise unchanged."""
    from mtl_helpers.adapters import add_lora

    torch.manual_seed(0)
    start = add_lora(MultiTaskModel.for_tasks(tiny_bert(3), [trec]), rank=4, alpha=8, layers=1)
    before = snapshot(start)
    base = [n for n, p in start.named_parameters() if not p.requires_grad]
    assert frozen_level(start) == 3  # the embeddings and blocks 0 and 1: no adapter below the top block
    plain = run(copy.deepcopy(start), tokenizer, [trec], False, 5 / 6)
    cached = run(copy.deepcopy(start), tokenizer, [trec], True, 5 / 6)
    assert isinstance(cached.data, LayerCache)
    assert_same_run(plain, cached)
    assert_same_scores(plain.evaluate(), cached.evaluate())
    params = dict(cached.model.named_parameters())
    assert all(torch.equal(params[n], before[n]) for n in base)


def test_lora_in_every_layer_leaves_nothing_to_cache(tokenizer, trec):
    from mtl_helpers.adapters import add_lora

    model = add_lora(MultiTaskModel.for_tasks(tiny_bert(3), [trec]), rank=4, alpha=8)
    assert frozen_level(model) == 0  # block 0 holds a trainable adapter: only the embeddings are frozen


def test_a_recipe_of_lora_in_the_top_layers_trains_on_the_cache(tiny_recipes, trec):
    recipe = Recipe(train=("heads",), adapter="lora", lora_layers=1, cache_frozen_layers=True, epochs=0.5)
    trainer = build_trainer(recipe, [trec], 0, tiny_recipes)
    assert isinstance(trainer.data, LayerCache) and frozen_level(trainer.model) == 3
    trainer.fit(recipe.epochs)
    assert trainer.global_step > 0 and all(torch.isfinite(losses(trainer)))
