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
    rates = discriminative_rates(two_heads, lr=1e-3, factor=2.6)
    assert rates["head.a"] == rates["head.b"] == 1e-3
    assert rates["layer.2"] == 1e-3 / 2.6
    assert rates["layer.1"] == 1e-3 / 2.6 / 2.6**1
    assert rates["layer.0"] == pytest.approx(1e-3 / 2.6**3, rel=1e-12)
    assert rates["embeddings"] == pytest.approx(1e-3 / 2.6**4, rel=1e-12)
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
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param], "lr": 0.32}], lr=0.32)
    scheduler = slanted_triangular(optimizer, total_steps=100, cut_frac=0.1, ratio=32)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.01)  # lr / ratio
    assert max(lrs) == pytest.approx(0.32) and lrs.index(max(lrs)) == 10
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.01 + (0.32 - 0.01) / 90, rel=1e-6)


def test_slanted_triangular_survives_tiny_runs():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = slanted_triangular(optimizer, total_steps=1)
    optimizer.step()
    scheduler.step()
    with pytest.raises(ValueError):
        slanted_triangular(optimizer, total_steps=0)


def test_gradual_stages_go_from_the_top_down(two_heads):
    assert gradual_unfreezing_stages(two_heads) == [["head.a", "head.b"], ["layer.2"], ["layer.1"], ["layer.0"], ["embeddings"]]


def test_history_records_the_rate_each_step_used(make_model, tokenizer, trec):
    from mtl_helpers import Trainer, TrainConfig

    model = make_model([trec])
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(epochs=1, lr=0.32, ratio=32, batch_size=16, progress=False, eval_train=False))
    trainer.fit()
    first = trainer.history.lr_frame().iloc[0]
    assert (first == 0.01).all()  # step 1 runs at lr / ratio, the slanted schedule's start
