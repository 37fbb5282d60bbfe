"""Training behaviour: frozen means bitwise unchanged, the optimizer holds exactly the trainable
parameters at their intended rates, faults stop cleanly, and the same seed gives the same run."""
from __future__ import annotations

import pytest
import torch

from mtl_helpers import (
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
    before = snapshot(model)
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(epochs=1, lr=1e-2, weight_decay=0.5, **FAST))
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
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(lr=1e-3, factor=2.6, **FAST))
    ids = optimizer_ids(trainer)
    assert len(ids) == len(set(ids)) and set(ids) == trainable_ids(model)
    rates = discriminative_rates(model, 1e-3, 2.6)
    for group in trainer.optimizer.param_groups:
        assert group["lr"] == rates[group["name"].split("/")[0]]
    assert {g["name"].split("/")[0] for g in trainer.optimizer.param_groups} == {"layer.1", "layer.2", "head.trec", "head.sst2"}


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
        assert added and all(g["lr"] == rates[g["name"].split("/")[0]] for g in added)
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


def test_nan_loss_stops_with_step_and_task_and_keeps_the_last_good_state(make_model, tokenizer, trec):
    model = make_model([trec])
    states = []
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=1, **FAST), callbacks=[lambda t, event, info: states.append(snapshot(model)) if event == "step" else None])

    def poison(module, inputs, output):
        return output * float("nan") if trainer.global_step == 2 else output

    model.heads["trec"].register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"step 3 \(task 'trec'\).*state from step 2"):
        trainer.fit()
    assert len(trainer.history.steps) == 2
    assert all(torch.equal(p, states[-1][n]) for n, p in model.named_parameters())


def test_interrupt_keeps_history_and_best_checkpoint(make_model, tokenizer, trec, tmp_path):
    model = make_model([trec])
    checkpoint = tmp_path / "best.pt"

    def interrupt(trainer, event, info):
        if event == "step" and trainer.global_step == 8:
            raise KeyboardInterrupt

    trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=2, checkpoint_path=str(checkpoint), **FAST), callbacks=[interrupt])
    with pytest.warns(UserWarning, match="interrupted at step 8"):
        history = trainer.fit()
    assert history.interrupted and len(history.steps) == 8 and len(history.evals) == 2  # epoch 1: validation + train
    state = torch.load(checkpoint)
    assert set(state) == set(model.state_dict())
    assert not list(tmp_path.glob(".*.tmp"))


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
    record = trainer.result("ner")
    assert record["metrics"]["conll2003"]["metric"] == "entity_f1"


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(lr=-1), dict(sampling="random"), dict(padding="none"), dict(schedule="cosine")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="Invalid TrainConfig value"):
        TrainConfig(**bad)


def test_result_record_describes_the_run(make_model, tokenizer, trec, sst2):
    model = make_model([trec, sst2])
    freeze(model, "backbone")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(epochs=1, lr=1e-2, **FAST))
    trainer.fit()
    record = trainer.result("heads-only", note="test")
    assert record["trainable_params"] == sum(g.numel for n, g in layer_groups(model).items() if n.startswith("head."))
    assert record["metrics"]["trec"]["metric"] == "accuracy" and 0 <= record["metrics"]["trec"]["value"] <= 1
    assert record["examples_per_second"] > 0 and record["steps"] == 12 and record["note"] == "test"


def test_cached_train_slice_matches_each_tasks_own_rows(make_model, tokenizer, trec):
    sst2 = load_task("sst2", max_train=200, max_eval=40)  # sizes differ from trec's, so do the slices
    model = make_model([trec, sst2])
    freeze(model, "backbone")
    trainer = Trainer(model, tokenizer, [trec, sst2], TrainConfig(cache_features=True, **FAST))
    cached = trainer.evaluate("train_eval")
    recomputed = Trainer(model, tokenizer, [trec, sst2], TrainConfig(**FAST)).evaluate("train_eval")
    for task in ("trec", "sst2"):
        assert cached[task]["accuracy"] == recomputed[task]["accuracy"]
        assert cached[task]["loss"] == pytest.approx(recomputed[task]["loss"], abs=1e-5)


def test_heads_are_initialised_from_the_seed_whatever_ran_before(trec, sst2):
    from conftest import tiny_bert
    from mtl_helpers import MultiTaskModel

    first = MultiTaskModel.for_tasks(tiny_bert(), [trec, sst2], seed=5)
    torch.rand(1000)  # move the global RNG
    second = MultiTaskModel.for_tasks(tiny_bert(), [trec, sst2], seed=5)
    other = MultiTaskModel.for_tasks(tiny_bert(), [trec, sst2], seed=6)
    assert torch.equal(first.heads["trec"].classifier.weight, second.heads["trec"].classifier.weight)
    assert not torch.equal(first.heads["trec"].classifier.weight, other.heads["trec"].classifier.weight)
