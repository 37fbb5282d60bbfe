"""Discriminative rates, parameter groups, the optimizer audit and the slanted triangular schedule."""

from __future__ import annotations

import pytest
import torch

from mtl_helpers import (
    OptimizerAuditError,
    audit_optimizer,
    discriminative_param_groups,
    discriminative_rates,
    freeze,
    gradual_unfreezing_stages,
    slanted_triangular,
)


def test_each_lower_group_gets_the_rate_above_divided_by_the_factor(two_heads):
    rates = discriminative_rates(two_heads, lr=1e-2, factor=2.6, backbone_lr=1e-3)
    assert rates["head.a"] == rates["head.b"] == 1e-2
    assert rates["layer.2"] == 1e-3  # the top backbone depth gets backbone_lr itself
    assert rates["layer.1"] == 1e-3 / 2.6
    assert rates["layer.0"] == pytest.approx(1e-3 / 2.6**2, rel=1e-12)
    assert rates["embeddings"] == pytest.approx(1e-3 / 2.6**3, rel=1e-12)
    assert discriminative_rates(two_heads, lr=1e-3, factor=2.6)["layer.2"] == 1e-3  # default: backbone_lr = lr
    one = discriminative_rates(two_heads, lr=5e-5, factor=1.0)
    assert set(one.values()) == {5e-5}
    split = discriminative_rates(two_heads, lr=5e-5, factor=1.0, backbone_lr=1e-5)
    assert split["head.a"] == 5e-5 and split["embeddings"] == split["layer.2"] == 1e-5


def test_param_groups_hold_exactly_the_trainable_parameters(two_heads):
    freeze(two_heads, "embeddings", "layer.0")
    groups = discriminative_param_groups(two_heads, lr=1e-3, factor=2.6, weight_decay=0.1)
    held = [p for g in groups for p in g["params"]]
    trainable = [p for p in two_heads.parameters() if p.requires_grad]
    assert len(held) == len({id(p) for p in held}) == len(trainable)
    assert {id(p) for p in held} == {id(p) for p in trainable}
    names = {g["name"] for g in groups}
    assert not any(n.startswith(("embeddings", "layer.0")) for n in names)
    for group in groups:
        assert group["weight_decay"] == (0.0 if group["name"].endswith("/no_decay") else 0.1)
        assert all((p.ndim < 2) == group["name"].endswith("/no_decay") for p in group["params"])
    rates = discriminative_rates(two_heads, 1e-3, 2.6)
    assert all(g["lr"] == rates[g["name"].split("/")[0]] for g in groups)


def test_audit_catches_frozen_missing_and_repeated_parameters(two_heads):
    optimizer = torch.optim.AdamW(discriminative_param_groups(two_heads, 1e-3))
    audit_optimizer(two_heads, optimizer)
    freeze(two_heads, "head.a")
    with pytest.raises(OptimizerAuditError, match="frozen tensors are in the optimizer"):
        audit_optimizer(two_heads, optimizer)
    partial = torch.optim.AdamW([p for n, p in two_heads.named_parameters() if n.startswith("heads.b")])
    with pytest.raises(OptimizerAuditError, match="trainable tensors are in no group"):
        audit_optimizer(two_heads, partial)
    head_b = list(two_heads.heads["b"].parameters())
    twice = torch.optim.SGD([{"params": head_b[:1]}, {"params": head_b[1:]}], lr=0.1)
    twice.param_groups[1]["params"].append(head_b[0])  # torch refuses this at construction, not later
    with pytest.raises(OptimizerAuditError, match="more than one group"):
        audit_optimizer(two_heads, twice)


def test_slanted_triangular_rises_then_decays():
    lrs = [0.32 * slanted_triangular(step, total_steps=100, cut_frac=0.1, ratio=32) for step in range(100)]
    assert lrs[0] == pytest.approx(0.01)  # lr / ratio
    assert max(lrs) == pytest.approx(0.32) and lrs.index(max(lrs)) == 10
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.01 + (0.32 - 0.01) / 90, rel=1e-6)


def test_slanted_triangular_survives_tiny_runs():
    assert slanted_triangular(0, total_steps=1) == pytest.approx(1 / 32)
    with pytest.raises(ValueError):
        slanted_triangular(0, total_steps=0)


def test_rate_schedule_follows_groups_that_join_and_restarts():
    from mtl_helpers import RateSchedule

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0, "peak_lr": 1.0}], lr=1.0)
    schedule = RateSchedule("slanted", total_steps=10, cut_frac=0.1, ratio=32)
    for _ in range(4):
        schedule.apply(optimizer)
        schedule.advance()
    optimizer.add_param_group({"params": [b], "lr": 0.0, "peak_lr": 0.5})  # joins mid-run
    rates = schedule.apply(optimizer)
    m = slanted_triangular(4, 10, 0.1, 32)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(m) and optimizer.param_groups[1]["lr"] == pytest.approx(
        0.5 * m
    )
    assert len(rates) == 2
    schedule.restart(5)
    schedule.apply(optimizer)
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.5 / 32)  # a new cycle starts low again


def test_gradual_stages_go_from_the_top_down(two_heads):
    assert gradual_unfreezing_stages(two_heads) == [
        ["head.a", "head.b"],
        ["layer.2"],
        ["layer.1"],
        ["layer.0"],
        ["embeddings"],
    ]
    assert gradual_unfreezing_stages(two_heads, 3) == [
        ["head.a", "head.b"],
        ["layer.1", "layer.2"],
        ["embeddings", "layer.0"],
    ]
    with pytest.raises(ValueError, match="n_stages"):
        gradual_unfreezing_stages(two_heads, 9)


def test_the_rate_functions_and_the_config_share_one_default_factor(two_heads):
    import inspect

    from mtl_helpers import DEFAULT_FACTOR, TrainConfig

    assert TrainConfig().factor == DEFAULT_FACTOR
    assert inspect.signature(discriminative_rates).parameters["factor"].default == DEFAULT_FACTOR
    assert inspect.signature(discriminative_param_groups).parameters["factor"].default == DEFAULT_FACTOR


def test_spread_factor_reaches_the_bottom_at_the_intended_divisor(two_heads):
    from mtl_helpers import spread_factor

    factor = spread_factor(two_heads, 2.6**4)
    rates = discriminative_rates(two_heads, lr=1e-2, factor=factor, backbone_lr=1e-3)
    assert rates["layer.2"] == 1e-3 and rates["embeddings"] == pytest.approx(1e-3 / 2.6**4)
    assert rates["layer.1"] / rates["layer.0"] == pytest.approx(rates["layer.0"] / rates["embeddings"])


@pytest.mark.parametrize(
    "bad",
    [dict(lr=float("nan")), dict(lr=1e-3, factor=float("inf")), dict(lr=1e-3, backbone_lr=float("nan")), dict(lr=0)],
)
def test_rates_reject_non_finite_or_non_positive_values(two_heads, bad):
    with pytest.raises(ValueError, match="finite number > 0"):
        discriminative_rates(two_heads, **bad)


def test_history_records_the_rate_each_step_used(make_model, tokenizer, trec):
    from mtl_helpers import Trainer, TrainConfig

    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=1, lr=0.32, ratio=32, batch_size=16, progress=False))
    trainer.fit()
    first = trainer.history.lr_frame().iloc[0]
    assert (first == 0.01).all()  # step 1 runs at lr / ratio, the slanted schedule's start
