"""Callbacks: freezing and unfreezing from inside a run keeps the optimizer, the schedule and the
clipping right (on two architectures), and ULMFiT's gradual unfreezing runs as a callback."""

from __future__ import annotations

import pytest
import torch
from transformers import DistilBertConfig, DistilBertModel

from conftest import tiny_bert
from mtl_helpers import (
    Callback,
    Evaluation,
    GradualUnfreezing,
    MTLError,
    MultiTaskModel,
    Stage,
    Trainer,
    TrainConfig,
    changed_groups,
    discriminative_rates,
    freeze,
    slanted_triangular,
    snapshot,
    ulmfit_stages,
)

FAST = dict(batch_size=16, eval_batch_size=64, progress=False)


def build(kind, tasks):
    encoder = (
        tiny_bert()
        if kind == "bert"
        else DistilBertModel(
            DistilBertConfig(
                vocab_size=30522, dim=32, n_layers=3, n_heads=2, hidden_dim=64, max_position_embeddings=128
            )
        )
    )
    return MultiTaskModel.for_tasks(encoder, tasks, seed=0)


class At(Callback):
    """Runs `action(trainer)` once, at the end of step `step`."""

    def __init__(self, step, action):
        self.step, self.action, self.states = step, action, {}

    def on_step_end(self, trainer, step):
        self.states[trainer.global_step] = snapshot(trainer.model)
        if trainer.global_step == self.step:
            self.action(trainer)


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_unfreezing_from_a_step_callback_joins_at_the_group_rate_and_follows_the_schedule(kind, tokenizer, trec, sst2):
    model = build(kind, [trec, sst2])
    freeze(model, "backbone")
    config = TrainConfig(epochs=1, lr=1e-2, factor=2.6, backbone_lr=1e-3, **FAST)
    hook = At(3, lambda t: t.unfreeze("layer.2"))
    trainer = Trainer(model, tokenizer, [trec, sst2], config, callbacks=[hook])
    trainer.fit()
    steps = trainer.history.steps
    assert len(steps) == trainer.global_step == 12  # no update ran ahead of the history
    rates = discriminative_rates(model, 1e-2, 2.6, 1e-3)
    for record in steps:
        multiplier = slanted_triangular(record["step"] - 1, 12, 0.1, 32)
        assert record["lr"]["head.trec"] == pytest.approx(rates["head.trec"] * multiplier)
        if record["step"] <= 3:
            assert "layer.2" not in record["lr"]
        else:  # joined after step 3: its own rate times the running schedule's multiplier
            assert record["lr"]["layer.2"] == pytest.approx(rates["layer.2"] * multiplier)
    moved = changed_groups(model, hook.states[3])
    assert not moved.loc["layer.2", "bitwise identical"] and moved.loc["layer.1", "bitwise identical"]
    assert {id(p) for p in trainer.trainable_parameters()} == {id(p) for p in model.parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_freezing_from_an_epoch_callback_takes_the_group_and_its_state_out(kind, tokenizer, trec):
    model = build(kind, [trec])

    class FreezeAfterFirstEpoch(Callback):
        def on_epoch_end(self, trainer):
            if trainer.global_step == 6:
                trainer.freeze("layer.2", "head.trec")
                self.state = snapshot(trainer.model)

    hook = FreezeAfterFirstEpoch()
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=2, lr=1e-3, **FAST), callbacks=[hook])
    trainer.fit()
    assert trainer.global_step == len(trainer.history.steps) == 12
    moved = changed_groups(model, hook.state)
    assert moved.loc["layer.2", "bitwise identical"] and moved.loc["head.trec", "bitwise identical"]
    assert not moved.loc["layer.1", "bitwise identical"]
    frozen = {id(p) for p in model.heads["trec"].parameters()}
    assert not frozen & {id(p) for p in trainer.optimizer.state}
    assert not frozen & {id(p) for p in trainer.trainable_parameters()}  # clipping covers exactly the trainable ones


def test_gradual_unfreezing_callback_stages_rates_and_restarts(tokenizer, trec, sst2):
    model = build("bert", [trec, sst2])
    stages = ulmfit_stages(model, n_stages=3, epochs_per_stage=0.5)
    assert [s.groups for s in stages] == [["head.trec", "head.sst2"], ["layer.1", "layer.2"], ["embeddings", "layer.0"]]
    assert [s.rate_scale for s in stages] == [1.0, 0.5, 0.25]
    hook = At(0, lambda t: None)
    start = snapshot(model)
    trainer = Trainer(
        model,
        tokenizer,
        [trec, sst2],
        TrainConfig(lr=1e-2, backbone_lr=1e-3, **FAST),
        callbacks=[GradualUnfreezing(stages), hook],
    )
    trainer.fit(1.5)
    assert trainer.global_step == 18
    lrs = trainer.history.lr_frame()
    assert lrs["layer.2"].isna()[:6].all() and lrs["layer.2"].notna()[6:].all()
    assert lrs["embeddings"].isna()[:12].all() and lrs["embeddings"].notna()[12:].all()
    # each stage starts a new slanted cycle, at a lower top rate
    assert lrs.loc[7, "head.trec"] == pytest.approx(1e-2 * 0.5 * slanted_triangular(0, 6))
    assert lrs.loc[13, "layer.2"] == pytest.approx(1e-3 * 0.25 * slanted_triangular(0, 6))
    # a group stays bitwise frozen until its stage, and trains after it
    assert changed_groups(model, start).loc[["layer.2", "embeddings"], "bitwise identical"].eq(False).all()
    by_stage = {6: ["layer.1", "layer.2", "embeddings", "layer.0"], 12: ["embeddings", "layer.0"]}
    for step, frozen in by_stage.items():
        state = hook.states[step]
        for group in frozen:
            names = [
                n
                for n in start
                if n.startswith(
                    ("encoder.embeddings" if group == "embeddings" else f"encoder.encoder.layer.{group[-1]}.")
                )
            ]
            assert names and all(torch.equal(state[n], start[n]) for n in names), (step, group)


def test_gradual_unfreezing_checks_the_fit_length(tokenizer, trec):
    model = build("bert", [trec])
    trainer = Trainer(
        model, tokenizer, [trec], TrainConfig(**FAST), callbacks=[GradualUnfreezing([Stage(["heads"], 1.0)])]
    )
    with pytest.raises(MTLError, match=r"stages add up to 1.0 epochs, but fit runs 2"):
        trainer.fit(2)


def test_evaluation_every_half_epoch(tokenizer, trec):
    model = build("bert", [trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(eval_every=None, **FAST), callbacks=[Evaluation(every=0.5)])
    trainer.fit(1)
    assert list(trainer.history.frame()["step"]) == [3, 6]
    assert list(trainer.history.frame()["epoch"]) == [0.5, 1.0]


# ---------------------------------------------------------------- the order callbacks run in


class Log(Callback):
    """Appends its name to a shared log at every fit start and step end."""

    def __init__(self, name, order, log):
        self.name, self.order, self.log = name, order, log

    def on_fit_start(self, trainer):
        self.log.append(("start", self.name))

    def on_step_end(self, trainer, step):
        self.log.append((trainer.global_step, self.name))


def test_the_trainer_runs_callbacks_by_order_then_insertion_whatever_order_they_were_passed_in(tokenizer, trec):
    log = []
    late, first_tie, second_tie, early = (
        Log(name, order, log) for name, order in (("late", 20), ("tie 1", 0), ("tie 2", 0), ("early", -50))
    )
    trainer = Trainer(
        build("bert", [trec]),
        tokenizer,
        [trec],
        TrainConfig(eval_every=None, **FAST),
        callbacks=[late, first_tie, second_tie],
    )
    trainer.callbacks.append(early)  # added last, runs first
    trainer.fit(2 / 6)  # two steps
    expected = ["early", "tie 1", "tie 2", "late"]
    assert log == [("start", n) for n in expected] + [(s, n) for s in (1, 2) for n in expected]


def test_at_a_stage_boundary_the_evaluation_belongs_to_the_stage_that_trained(tokenizer, trec):
    """GradualUnfreezing passed before Evaluation still runs after it: the scores taken at the step
    where the heads stage ends are labelled with that stage, not with the stage about to start."""
    model = build("bert", [trec])
    stages = [Stage(["heads"], 1.0, name="heads only"), Stage(["layer.2"], 1.0, name="+layer.2")]
    trainer = Trainer(
        model,
        tokenizer,
        [trec],
        TrainConfig(eval_every=None, **FAST),
        callbacks=[GradualUnfreezing(stages), Evaluation(every=1.0)],
    )
    trainer.fit(2)
    frame = trainer.history.frame()
    assert list(frame["step"]) == [6, 12]
    assert list(frame["stage"]) == ["heads only", "+layer.2"]
