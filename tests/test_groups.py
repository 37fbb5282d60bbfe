"""Layer groups of any encoder, freezing (LayerNorm included), dropout in frozen parts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AlbertConfig, AlbertModel, DistilBertConfig, DistilBertModel, RobertaConfig, RobertaModel

from conftest import tiny_bert
from mtl_helpers import (
    MultiTaskModel,
    SentenceHead,
    UnknownGroupError,
    UnsupportedEncoderError,
    freeze,
    layer_groups,
    top_groups,
    train_only,
    trainable_summary,
    unfreeze,
)

HEADS = {"a": 3, "b": 2}


def with_heads(encoder, hidden=32):
    return MultiTaskModel(encoder, {t: SentenceHead(hidden, n) for t, n in HEADS.items()})


def encoders():
    small = dict(vocab_size=30522, max_position_embeddings=64)
    return {
        "bert": tiny_bert(),
        "distilbert": DistilBertModel(DistilBertConfig(dim=32, n_layers=3, n_heads=2, hidden_dim=64, **small)),
        "roberta": RobertaModel(
            RobertaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, **small)
        ),
    }


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_groups_cover_every_parameter_once_in_order(kind):
    model = with_heads(encoders()[kind])
    groups = layer_groups(model)
    assert list(groups) == ["embeddings", "layer.0", "layer.1", "layer.2", "head.a", "head.b"]
    ids = [id(p) for g in groups.values() for _, p in g.params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


@pytest.mark.parametrize("kind", ["bert", "distilbert", "roberta"])
def test_forward_works_for_each_encoder(kind, tokenizer):
    model = with_heads(encoders()[kind]).eval()
    batch = tokenizer(["a short one", "and a slightly longer sentence"], padding=True, return_tensors="pt")
    assert model("a", batch).shape == (2, 3)
    assert model.embed(batch).shape == (2, 32)


def test_pooler_is_removed():
    model = with_heads(tiny_bert())
    assert model.encoder.pooler is None
    assert not any("pooler" in name for name, _ in model.named_parameters())


def test_shared_layer_encoders_are_refused_clearly():
    albert = AlbertModel(
        AlbertConfig(
            vocab_size=100,
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    with pytest.raises(UnsupportedEncoderError, match="ALBERT"):
        layer_groups(with_heads(albert))


def test_unknown_group_lists_the_valid_ones(two_heads):
    with pytest.raises(
        UnknownGroupError, match=r"Unknown layer group 'layer.9'. Valid groups: embeddings, layer.0.*aliases: backbone"
    ):
        freeze(two_heads, "layer.9")


def test_freezing_the_backbone_freezes_layernorm_and_biases(two_heads):
    freeze(two_heads, "backbone")
    for name, param in two_heads.named_parameters():
        assert param.requires_grad == name.startswith("heads."), name
    assert any("LayerNorm" in n for n, p in two_heads.named_parameters() if not p.requires_grad)
    summary = trainable_summary(two_heads)
    assert summary.loc["layer.0", "state"] == "frozen" and summary.loc["head.a", "state"] == "trainable"
    assert summary["parameters"].sum() == sum(p.numel() for p in two_heads.parameters())


def test_frozen_parts_run_without_dropout(two_heads, tokenizer):
    freeze(two_heads, "backbone")
    two_heads.train()
    assert not two_heads.encoder.embeddings.training and not two_heads.encoder.encoder.layer[2].training
    assert two_heads.heads["a"].training
    batch = tokenizer(["the same sentence twice"], return_tensors="pt")
    assert torch.equal(two_heads.embed(batch), two_heads.embed(batch))  # deterministic in train mode
    unfreeze(two_heads, "layer.2")
    assert two_heads.encoder.encoder.layer[2].training and not two_heads.encoder.encoder.layer[1].training


def test_dropout_switch_keeps_dropout_in_frozen_parts(tokenizer):
    model = MultiTaskModel(tiny_bert(), {"a": SentenceHead(32, 3)}, dropout_in_frozen=True)
    freeze(model, "backbone")
    model.train()
    assert model.encoder.embeddings.training
    batch = tokenizer(["the same sentence twice"], return_tensors="pt")
    assert not torch.equal(model.embed(batch), model.embed(batch))


def test_top_groups(two_heads):
    assert top_groups(two_heads, 0) == []
    assert top_groups(two_heads, 2) == ["layer.1", "layer.2"]
    assert top_groups(two_heads, 4) == ["embeddings", "layer.0", "layer.1", "layer.2"]
    with pytest.raises(ValueError):
        top_groups(two_heads, 5)


GROUP_NAMES = ["embeddings", "layer.0", "layer.1", "layer.2", "head.a", "head.b", "backbone", "layers", "heads", "all"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["freeze", "unfreeze", "train_only"]), st.lists(st.sampled_from(GROUP_NAMES), max_size=3)
        ),
        max_size=8,
    )
)
def test_any_freeze_sequence_gives_the_intended_trainable_set(ops):
    model = with_heads(tiny_bert())
    expand = {
        "backbone": {"embeddings", "layer.0", "layer.1", "layer.2"},
        "layers": {"layer.0", "layer.1", "layer.2"},
        "heads": {"head.a", "head.b"},
    }
    expand["all"] = expand["backbone"] | expand["heads"]
    intended = set(expand["all"])
    for op, names in ops:
        chosen = set().union(*(expand.get(n, {n}) for n in names)) if names else set()
        if op == "freeze":
            freeze(model, *names)
            intended -= chosen
        elif op == "unfreeze":
            unfreeze(model, *names)
            intended |= chosen
        else:
            train_only(model, *names)
            intended = chosen
    for name, group in layer_groups(model).items():
        flags = {p.requires_grad for _, p in group.params}
        assert flags == {name in intended}, (name, ops)


# ---------------------------------------------------------------- one partition per change


def test_one_trainer_unfreeze_partitions_the_model_once(make_model, tokenizer, trec, monkeypatch):
    """Resolving names, building optimizer groups and re-applying the dropout rule all read the
    partition; it is computed once (the cache was emptied first) and reused by the next unfreeze."""
    from mtl_helpers import Trainer, TrainConfig, groups

    model = make_model([trec])
    freeze(model, "backbone")
    trainer = Trainer(model, tokenizer, [trec], TrainConfig(progress=False, eval_every=None))
    computed = []
    real = groups._compute_partition
    monkeypatch.setattr(groups, "_compute_partition", lambda m: computed.append(1) or real(m))
    groups._PARTITIONS.clear()
    trainer.unfreeze("layer.2")
    assert len(computed) == 1
    trainer.unfreeze("layer.1")
    trainer.freeze("layer.2")
    assert len(computed) == 1  # freezing changes requires_grad only: the same partition serves


def test_the_partition_follows_changes_to_the_models_parameters(make_model, trec):
    from mtl_helpers import truncate_encoder

    model = make_model([trec])
    assert [n for n in layer_groups(model) if n.startswith("layer.")] == ["layer.0", "layer.1", "layer.2"]
    layer_groups(model).clear()  # a caller's copy: the next call is whole again
    assert "head.trec" in layer_groups(model)
    truncate_encoder(model.encoder, 1)
    assert [n for n in layer_groups(model) if n.startswith("layer.")] == ["layer.0"]
    model.heads["extra"] = SentenceHead(32, 2)
    assert "head.extra" in layer_groups(model)
    freeze(model, "head.extra")
    assert layer_groups(model)["head.extra"].trainable == 0 and layer_groups(model)["head.trec"].trainable > 0
