"""Training behaviour: frozen means bitwise unchanged, the optimizer holds exactly the trainable
parameters at their intended rates, faults stop cleanly, and the same seed gives the same run."""

from __future__ import annotations

import math

import pytest
import torch

from mtl_helpers import (
    Callback,
    MTLError,
    Trainer,
    TrainConfig,
    TrainingDiverged,
    assert_frozen_unchanged,
    changed_groups,
    discriminative_rates,
    freeze,
    gradual_unfreezing_stages,
    layer_groups,
    load_task,
    snapshot,
)

FAST = dict(batch_size=16, eval_batch_size=64, progress=False)


def optimizer_ids(trainer):
    return [id(p) for g in trainer.optimizer.param_groups for p in g["params"]]


def trainable_ids(model):
    return {id(p) for p in model.parameters() if p.requires_grad}


def test_frozen_backbone_stays_bitwise_identical_with_weight_decay(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    freeze(model, "backbone")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(epochs=1, lr=1e-2, weight_decay=0.5, **FAST))
    before = snapshot(model)  # on the trainer's device: tests compare on one device
    trainer.fit()
    report = changed_groups(model, before)
    assert report.loc[[n for n in report.index if not n.startswith("head.")], "bitwise identical"].all()
    heads = [n for n, p in model.named_parameters() if n.startswith("heads.")]
    assert all(not torch.equal(dict(model.named_parameters())[n], before[n]) for n in heads)
    assert_frozen_unchanged(model, before)
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_optimizer_holds_exactly_the_trainable_parameters_at_their_rates(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    freeze(model, "embeddings", "layer.0")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(lr=1e-3, factor=2.6, backbone_lr=1e-4, **FAST))
    ids = optimizer_ids(trainer)
    assert len(ids) == len(set(ids)) and set(ids) == trainable_ids(model)
    rates = discriminative_rates(model, 1e-3, 2.6, 1e-4)
    for group in trainer.optimizer.param_groups:
        assert group["peak_lr"] == rates[group["name"].split("/")[0]]
    assert {g["name"].split("/")[0] for g in trainer.optimizer.param_groups} == {
        "layer.1",
        "layer.2",
        "head.trec",
        "head.sst2",
    }
    assert {id(p) for p in trainer.trainable_parameters()} == trainable_ids(model)


def test_gradual_unfreezing_trains_new_groups_and_nothing_frozen_moves(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    freeze(model, "all")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(lr=1e-2, factor=2.6, **FAST))
    assert trainer.optimizer is None
    stages = gradual_unfreezing_stages(model)
    rates = discriminative_rates(model, 1e-2, 2.6)
    unfrozen: list[str] = []
    for groups in stages[:3]:
        before = snapshot(model)
        trainer.unfreeze(*groups)
        unfrozen += groups
        added = [g for g in trainer.optimizer.param_groups if g["name"].split("/")[0] in groups]
        assert added and all(g["peak_lr"] == rates[g["name"].split("/")[0]] for g in added)
        assert set(optimizer_ids(trainer)) == trainable_ids(model)
        trainer.fit(0.5, stage=groups[0])
        report = changed_groups(model, before)
        for name in report.index:
            assert report.loc[name, "bitwise identical"] == (name not in unfrozen), name
    assert set(trainer.history.frame()["stage"]) == {"head.trec", "layer.2", "layer.1"}


def test_trainer_freeze_takes_parameters_and_state_out(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(lr=1e-3, **FAST))
    trainer.fit(0.5)
    trainer.freeze("head.trec")
    head = set(id(p) for p in model.heads["trec"].parameters())
    assert not head & set(optimizer_ids(trainer))
    assert not any(id(p) in head for p in trainer.optimizer.state)
    before = snapshot(model)
    trainer.fit(0.5)  # Task A's loss still flows through its frozen head
    assert changed_groups(model, before).loc["head.trec", "bitwise identical"]
    assert not changed_groups(model, before).loc["layer.2", "bitwise identical"]


def test_cached_features_train_the_heads_like_recomputing(make_model, tokenizer, trec, sst2):
    runs = {}
    for cached in (False, True):
        model = make_model([trec, sst2], seed=1)
        freeze(model, "backbone")
        trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(epochs=1, lr=1e-2, cache_features=cached, **FAST))
        trainer.fit()
        runs[cached] = (model, trainer.evaluate())
    for (name, a), (_, b) in zip(runs[False][0].heads.named_parameters(), runs[True][0].heads.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)
    assert runs[False][1]["trec"]["accuracy"] == pytest.approx(runs[True][1]["trec"]["accuracy"], abs=1 / 48)


def test_cached_features_need_a_frozen_backbone(make_model, tokenizer, trec):
    model = make_model([trec])
    with pytest.raises(MTLError, match="needs a frozen backbone"):
        Trainer(model, tokenizer, [trec], TrainConfig(cache_features=True, **FAST))


def test_same_seed_same_run(make_model, tokenizer, trec, sst2):
    results = []
    for _ in range(2):
        model = make_model([trec, sst2], seed=3)
        trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(epochs=1, lr=1e-3, seed=7, **FAST))
        trainer.fit()
        results.append((trainer.history.frame(), snapshot(model)))
    assert results[0][0].equals(results[1][0])
    assert all(torch.equal(results[0][1][n], results[1][1][n]) for n in results[0][1])


def test_seeding_happens_when_fit_starts(make_model, tokenizer, trec):
    """Code run between building the trainer and fitting it cannot change the result."""
    states = []
    for disturb in (False, True):
        model = make_model([trec], seed=3)
        trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=1, lr=1e-3, seed=5, **FAST))
        if disturb:
            torch.rand(1000)  # moves the global RNG, as any cell in a notebook might
            import random

            random.random()
        trainer.fit()
        states.append(snapshot(model))
    assert all(torch.equal(states[0][n], states[1][n]) for n in states[0])


def test_nan_loss_stops_with_step_and_task_and_keeps_the_last_good_state(make_model, tokenizer, trec):
    model = make_model([trec])
    states = []

    class Keep(Callback):
        def on_step_end(self, trainer, step):
            states.append(snapshot(model))

    trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=1, **FAST), callbacks=[Keep()])

    def poison(module, inputs, output):
        return output * float("nan") if trainer.global_step == 2 else output

    model.heads["trec"].register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"step 3 \(task 'trec'\).*state from step 2"):
        trainer.fit()
    assert len(trainer.history.steps) == 2
    assert all(torch.equal(p, states[-1][n]) for n, p in model.named_parameters())


def test_a_nan_gradient_without_clipping_stops_before_the_update(make_model, tokenizer, trec):
    """The loss is finite but a gradient is not: with clipping off, the check still runs before the step."""
    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=1, max_grad_norm=None, **FAST))
    weight = model.heads["trec"].classifier.weight
    weight.register_hook(lambda grad: grad * float("nan") if trainer.global_step == 1 else grad)
    before = {}

    class Keep(Callback):
        def on_step_end(self, trainer, step):
            before.update(snapshot(model))

    trainer.callbacks.append(Keep())
    with pytest.raises(TrainingDiverged, match=r"gradient norm became nan at step 2"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_deferred_checks_skip_the_bad_update_on_the_device(make_model, tokenizer, trec):
    """With sync_every > 1 the host reads the flags later; the fused optimizer skips the bad step and
    every later one, so the state is still the one from before the bad step."""
    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=1, sync_every=4, **FAST))
    if not trainer.optimizer.defaults.get("fused"):
        pytest.skip("this torch has no fused AdamW here")
    states = {}

    class Keep(Callback):
        def on_step_end(self, trainer, step):
            states[trainer.global_step] = snapshot(model)

    trainer.callbacks.append(Keep())
    model.heads["trec"].register_forward_hook(lambda m, i, o: o * float("nan") if trainer.global_step == 1 else o)
    with pytest.raises(TrainingDiverged, match=r"at step 2 .*state from step 1"):
        trainer.fit()
    assert all(torch.equal(p, states[1][n]) for n, p in model.named_parameters())


def test_interrupt_keeps_history_and_best_checkpoint_and_is_recorded(make_model, tokenizer, trec, tmp_path):
    model = make_model([trec])
    checkpoint = tmp_path / "best.pt"

    class Interrupt(Callback):
        def on_step_end(self, trainer, step):
            if trainer.global_step == 8:
                raise KeyboardInterrupt

    trainer = Trainer(
        model,
        tokenizer,
        [trec],
        TrainConfig(epochs=2, checkpoint_path=str(checkpoint), **FAST),
        callbacks=[Interrupt()],
    )
    with pytest.warns(UserWarning, match="interrupted at step 8"):
        history = trainer.fit()
    assert history.interrupted and len(history.steps) == 8 and len(history.evals) == 1  # epoch 1: validation
    state = torch.load(checkpoint)
    assert set(state) == set(model.state_dict())
    assert not list(tmp_path.glob(".*.tmp"))
    trainer.callbacks.pop()  # a later, complete fit
    trainer.fit(1)
    assert not trainer.history.interrupted and trainer.history.ever_interrupted
    assert trainer.result("interrupted-once", "smoke").interrupted


def test_mismatched_head_and_task(make_model, tokenizer, trec, sst2):
    model = make_model([trec])
    model.heads["sst2"] = model.heads.pop("trec")  # a 6-class head under a 2-class task's name
    with pytest.raises(MTLError, match="Head 'sst2' is a sentence head with 6 classes, but task 'sst2'"):
        Trainer(model, tokenizer, [sst2], TrainConfig(**FAST))


def test_nothing_trainable_refuses_to_fit_but_evaluates(make_model, tokenizer, trec):
    model = make_model([trec])
    freeze(model, "all")
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(**FAST))
    with pytest.raises(MTLError, match="Nothing is trainable"):
        trainer.fit()
    assert 0 <= trainer.evaluate()["trec"]["accuracy"] <= 1


def test_token_task_trains_and_reports_entity_f1(make_model, tokenizer):
    conll = load_task("conll2003", max_train=64, max_eval=32)
    model = make_model([conll])
    trainer = Trainer(model, tokenizer, [conll], TrainConfig(epochs=1, lr=1e-3, **FAST))
    trainer.fit()
    metrics = trainer.history.final()["conll2003"]
    assert {"entity_f1", "token_accuracy", "loss"} <= set(metrics)
    record = trainer.result("ner", "smoke")
    assert record.tasks["conll2003"]["metric"] == "entity_f1"
    assert record.outcome_array("conll2003").shape == (32, 3)


@pytest.mark.parametrize(
    "bad, field",
    [
        (dict(epochs=0), "epochs"),
        (dict(epochs=float("inf")), "epochs"),
        (dict(lr=-1), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(backbone_lr=float("nan")), "backbone_lr"),
        (dict(factor=float("inf")), "factor"),
        (dict(factor=0), "factor"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(ratio=0), "ratio"),
        (dict(ratio=-2), "ratio"),
        (dict(max_grad_norm=-1.0), "max_grad_norm"),
        (dict(loss_weights={"trec": -1.0}), "loss_weights"),
        (dict(sampling="random"), "sampling"),
        (dict(padding="none"), "padding"),
        (dict(schedule="cosine"), "schedule"),
        (dict(batch_size=0), "batch_size"),
        (dict(cut_frac=1.5), "cut_frac"),
        (dict(sync_every=0), "sync_every"),
    ],
)
def test_config_rejects_values_that_would_train_wrong(bad, field):
    with pytest.raises(ValueError, match=rf"Invalid TrainConfig: {field}=.*allowed: "):
        TrainConfig(**bad)


def test_loss_weights_must_name_known_tasks(make_model, tokenizer, trec):
    with pytest.raises(MTLError, match=r"loss_weights names unknown task\(s\) \['sst-2'\]"):
        Trainer(make_model([trec]), tokenizer, [trec], TrainConfig(loss_weights={"sst-2": 1.0}, **FAST))


@pytest.mark.parametrize("epochs", [0, -1, float("nan"), True])
def test_fit_rejects_a_non_positive_number_of_epochs(make_model, tokenizer, trec, epochs):
    trainer = Trainer(make_model([trec]), tokenizer, [trec], TrainConfig(**FAST))
    with pytest.raises(MTLError, match="number of epochs must be a finite number > 0"):
        trainer.fit(epochs)
    assert trainer.global_step == 0


def test_two_tasks_with_one_name_are_refused(make_model, tokenizer, trec):
    with pytest.raises(MTLError, match="Two tasks share the name 'trec'"):
        Trainer(make_model([trec]), tokenizer, [trec, trec], TrainConfig(**FAST))


def test_a_gpu_request_without_a_gpu_fails_at_construction(make_model, tokenizer, trec, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MTLError, match="device='cuda'.*torch sees none"):
        Trainer(make_model([trec]), tokenizer, [trec], TrainConfig(device="cuda", **FAST))


def test_an_encoder_with_a_smaller_vocabulary_fails_at_construction(tokenizer, trec):
    from transformers import BertConfig, BertModel

    from mtl_helpers import MultiTaskModel

    encoder = BertModel(
        BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    )
    model = MultiTaskModel.for_tasks(encoder, [trec])
    with pytest.raises(MTLError, match=r"tokenizer has 30522 tokens but the encoder's embedding table only 1000 rows"):
        Trainer(model, tokenizer, [trec], TrainConfig(**FAST))


def test_result_record_describes_the_run(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    freeze(model, "backbone")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(epochs=1, lr=1e-2, **FAST))
    trainer.fit()
    record = trainer.result("heads-only", "smoke", note="test")
    assert record.trainable_params == sum(g.numel for n, g in layer_groups(model).items() if n.startswith("head."))
    assert set(record.trained) == {"head.trec", "head.sst2"} and record.trained["head.trec"] == 1e-2
    assert 0 <= record.metric("trec") <= 1 and 0 <= record.metric("trec", "test") <= 1
    assert record.budget == {"examples": 192, "steps": 12, "epochs": 1.0}
    assert record.train_examples_per_second > 0 and record.inference_examples_per_second > 0
    assert record.extra == {"note": "test"} and not record.interrupted
    assert record.peak_memory_mb > 0 and record.memory_method
    assert record.outcome_array("trec").mean() == pytest.approx(record.metric("trec"))


def test_cached_train_slice_matches_each_tasks_own_rows(make_model, tokenizer, trec):
    sst2 = load_task("sst2", max_train=200, max_eval=40)  # sizes differ from trec's, so do the slices
    model = make_model([trec, sst2])
    freeze(model, "backbone")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(cache_features=True, **FAST))
    cached = trainer.evaluate_outcomes("train_eval")
    recomputed = Trainer(model, tokenizer, [trec, sst2], TrainConfig(**FAST)).evaluate_outcomes("train_eval")
    for task in ("trec", "sst2"):
        assert (cached[task].outcomes == recomputed[task].outcomes).all()
        assert cached[task].metrics["loss"] == pytest.approx(recomputed[task].metrics["loss"], abs=1e-5)


def test_heads_are_initialised_from_the_seed_whatever_ran_before(trec, sst2):
    from conftest import tiny_bert

    from mtl_helpers import MultiTaskModel

    first = MultiTaskModel.for_tasks(tiny_bert(), [trec, sst2], seed=5)
    torch.rand(1000)  # move the global RNG
    second = MultiTaskModel.for_tasks(tiny_bert(), [trec, sst2], seed=5)
    other = MultiTaskModel.for_tasks(tiny_bert(), [trec, sst2], seed=6)
    assert torch.equal(first.heads["trec"].classifier.weight, second.heads["trec"].classifier.weight)
    assert not torch.equal(first.heads["trec"].classifier.weight, other.heads["trec"].classifier.weight)


def test_history_steps_match_the_updates(make_model, tokenizer, trec):
    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=1.5, **FAST))
    trainer.fit()
    assert len(trainer.history.steps) == trainer.global_step == math.ceil(1.5 * 6 - 0.5)
    assert [s["step"] for s in trainer.history.steps] == list(range(1, trainer.global_step + 1))
    assert isinstance(trainer.history.steps[0]["loss"], float)


def test_feature_cache_keeps_each_split_under_its_own_key(make_model, tokenizer, trec, sst2):
    """A second request for a split returns the stored rows (no new checksum of the backbone), and
    the per-cache store is keyed by (task, split), not by the process-wide key."""
    from mtl_helpers import FeatureCache, TokenizedTasks

    model = make_model([trec, sst2])
    freeze(model, "backbone")
    cache = FeatureCache(model, TokenizedTasks({"trec": trec, "sst2": sst2}, tokenizer), torch.device("cpu"), 64)
    first = cache.rows("trec", "validation")
    assert cache.rows("trec", "validation") is first
    assert ("trec", "validation") in cache._rows and all(len(k) == 2 and isinstance(k[0], str) for k in cache._rows)


def test_the_run_counters_live_in_the_state_and_read_through_the_trainer(make_model, tokenizer, trec):
    trainer = Trainer(make_model([trec]), tokenizer, [trec], TrainConfig(eval_every=None, **FAST))
    trainer.fit(0.5)  # 96 rows at batch 16: 6 steps per epoch, 3 in this fit
    state = trainer.state
    assert (state.global_step, state.step_in_fit, state.total_steps, state.steps_per_epoch) == (3, 3, 3, 6)
    assert (state.examples_seen, state.fits_started, state.fit_completed) == (48, 1, True)
    names = [
        "global_step",
        "step_in_fit",
        "epochs_done",
        "steps_per_epoch",
        "total_steps",
        "fit_epochs",
        "stage",
        "fit_completed",
        "examples_seen",
        "train_seconds",
        "peak_memory_mb",
        "memory_method",
        "trained_groups",
    ]
    assert all(getattr(trainer, n) == getattr(state, n) for n in names)
    assert trainer.trained_groups is state.trained_groups and set(state.trained_groups) >= {"head.trec"}
    with pytest.raises(AttributeError):
        trainer.global_step = 0  # the counters change in one place: trainer.state
