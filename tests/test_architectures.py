"""The one partition of the model, read the same way on every encoder layer_groups accepts: roles and
depths (extras at the top layer's depth), dropout off in frozen parts wherever the dropout module
sits, and cached features equal to recomputed ones wherever caching is allowed."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertModel,
    PreTrainedModel,
    RobertaConfig,
    RobertaModel,
    T5Config,
    T5EncoderModel,
)
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.bert.modeling_bert import BertLayer

from conftest import tiny_bert
from mtl_helpers import (
    MultiTaskModel,
    SentenceHead,
    Trainer,
    TrainConfig,
    discriminative_rates,
    freeze,
    gradual_unfreezing_stages,
    layer_groups,
    top_groups,
    trainable_summary,
    unfreeze,
)

VOCAB = 30522
FAST = dict(batch_size=16, eval_batch_size=64, progress=False)


class ScatteredEncoder(PreTrainedModel):
    """Embedding tables, their LayerNorm and dropout registered directly on the stack (no single
    embeddings module), transformer blocks, then a stack-level dropout and a final LayerNorm."""

    config_class = BertConfig

    def __init__(self, config):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.embedding_norm = nn.LayerNorm(config.hidden_size)
        self.embedding_dropout = nn.Dropout(0.5)
        self.blocks = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.output_dropout = nn.Dropout(0.5)
        self.final_norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.word_embeddings

    def forward(self, input_ids, attention_mask=None, **_):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        states = self.embedding_dropout(
            self.embedding_norm(self.word_embeddings(input_ids) + self.position_embeddings(positions))
        )
        mask = (1.0 - attention_mask[:, None, None, :].float()) * -1e4 if attention_mask is not None else None
        for block in self.blocks:
            out = block(states, attention_mask=mask)
            states = out[0] if isinstance(out, tuple) else out
        return BaseModelOutput(last_hidden_state=self.final_norm(self.output_dropout(states)))


def encoder(kind: str, layers: int = 3):
    small = dict(vocab_size=VOCAB, max_position_embeddings=128)
    bert_like = dict(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, **small)
    torch.manual_seed(0)
    if kind == "bert":
        return tiny_bert(layers)
    if kind == "distilbert":
        return DistilBertModel(DistilBertConfig(dim=32, n_layers=layers, n_heads=2, hidden_dim=64, **small))
    if kind == "roberta":
        return RobertaModel(RobertaConfig(**bert_like, pad_token_id=0))
    if kind == "deberta":
        return DebertaV2Model(
            DebertaV2Config(
                **bert_like,
                relative_attention=True,
                position_buckets=16,
                norm_rel_ebd="layer_norm",
                pos_att_type=["p2c", "c2p"],
                max_relative_positions=32,
            )
        )
    if kind == "t5":
        return T5EncoderModel(T5Config(vocab_size=VOCAB, d_model=32, d_kv=16, d_ff=64, num_layers=layers, num_heads=2))
    if kind == "scattered":
        return ScatteredEncoder(BertConfig(**bert_like, hidden_dropout_prob=0.5))
    raise ValueError(kind)


KINDS = ["bert", "distilbert", "roberta", "deberta", "t5", "scattered"]


def with_heads(enc):
    return MultiTaskModel(enc, {"a": SentenceHead(32, 3), "b": SentenceHead(32, 2)})


@pytest.mark.parametrize("kind", KINDS)
def test_every_parameter_in_exactly_one_group_with_a_role_and_depth(kind):
    model = with_heads(encoder(kind))
    groups = layer_groups(model)
    ids = [id(p) for g in groups.values() for _, p in g.params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert [n for n in groups if n.startswith("layer.")] == ["layer.0", "layer.1", "layer.2"]
    assert groups["embeddings"].depth == 0 and groups["layer.2"].depth == 3 and groups["head.a"].depth == 4
    if "extras" in groups:
        assert groups["extras"].role == "extras" and groups["extras"].depth == groups["layer.2"].depth


def test_t5_with_two_blocks_is_not_confused_by_each_blocks_own_list():
    """A T5 block holds a ModuleList of 2 sub-layers: with 2 blocks it has the same length as the stack."""
    model = with_heads(encoder("t5", layers=2))
    groups = layer_groups(model)
    assert [n for n in groups if n.startswith("layer.")] == ["layer.0", "layer.1"]
    assert all(name.startswith("encoder.encoder.block.1.") for name, _ in groups["layer.1"].params)
    assert "extras" in groups  # the final LayerNorm


@pytest.mark.parametrize("kind", ["deberta", "t5", "scattered"])
def test_extras_share_the_top_layers_rate_stage_and_top_k(kind):
    model = with_heads(encoder(kind))
    rates = discriminative_rates(model, lr=1e-2, factor=2.6, backbone_lr=1e-3)
    assert rates["extras"] == rates["layer.2"] == 1e-3  # not lr / 2.6**2 as for a separate depth
    assert rates["layer.1"] == pytest.approx(1e-3 / 2.6)
    assert gradual_unfreezing_stages(model)[1] == ["layer.2", "extras"]
    assert top_groups(model, 1) == ["layer.2", "extras"]


def _frozen_outputs_are_deterministic(model, tokenizer) -> bool:
    batch = tokenizer(["the same sentence twice", "and another one"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.equal(model.embed(batch), model.embed(batch))


@pytest.mark.parametrize("kind", KINDS)
def test_a_frozen_backbone_has_no_dropout_in_training_mode(kind, tokenizer):
    model = with_heads(encoder(kind))
    freeze(model, "backbone")
    model.train()
    assert _frozen_outputs_are_deterministic(model, tokenizer)
    summary = trainable_summary(model)
    backbone = [g for g in summary.index if not g.startswith("head.")]
    assert set(summary.loc[backbone, "dropout in training"]) <= {"off", "none"}
    assert (summary.loc[["head.a", "head.b"], "dropout in training"] == "on").all()
    unfreeze(model, "all")
    model.train()
    summary = trainable_summary(model)
    assert "on" in set(summary.loc[backbone, "dropout in training"])  # the report follows the state


def test_scattered_embedding_dropout_follows_the_embeddings_group(tokenizer):
    model = with_heads(encoder("scattered"))
    freeze(model, "embeddings")
    model.train()
    assert not model.encoder.embedding_dropout.training  # registered on the stack, but part of the embeddings
    assert model.encoder.output_dropout.training  # the top of the stack still trains
    assert trainable_summary(model).loc["embeddings", "dropout in training"] == "off"


@pytest.mark.parametrize("kind", KINDS)
def test_cached_features_equal_recomputed_ones(kind, tokenizer, trec, sst2):
    model = MultiTaskModel.for_tasks(encoder(kind), [trec, sst2], seed=0)
    freeze(model, "backbone")
    cached = Trainer(model, tokenizer, [trec, sst2], TrainConfig(cache_features=True, **FAST))
    live = Trainer(model, tokenizer, [trec, sst2], TrainConfig(**FAST))
    model.train()  # training mode: only the frozen-part rule keeps the backbone deterministic
    for task in ("trec", "sst2"):
        rows = cached.data.rows(task, "validation")
        tokens = live.data.rows(task, "validation")
        with torch.no_grad():
            recomputed = torch.cat(
                [
                    model.embed(live.data.collator(task)([{k: v for k, v in r.items() if k != "labels"}]))
                    for r in tokens[:8]
                ]
            )
        stored = torch.stack([r["features"] for r in rows[:8]])
        torch.testing.assert_close(stored, recomputed, atol=1e-5, rtol=1e-5)


def test_a_head_shared_by_two_tasks_or_tied_to_the_encoder_is_refused():
    from mtl_helpers import MTLError

    head = SentenceHead(32, 2)
    with pytest.raises(MTLError, match="share one head object"):
        MultiTaskModel(tiny_bert(), {"a": head, "b": head})
    enc = tiny_bert()
    tied = SentenceHead(32, 2)
    tied.classifier.weight = enc.embeddings.word_embeddings.weight  # type: ignore[assignment]
    with pytest.raises(MTLError, match="shares its weight 'classifier.weight' with the encoder"):
        MultiTaskModel(enc, {"a": tied})


def test_two_tasks_with_the_same_name_are_refused_when_building_heads(trec):
    from mtl_helpers import MTLError

    with pytest.raises(MTLError, match="Two tasks are named 'trec'"):
        MultiTaskModel.for_tasks(tiny_bert(), [trec, trec])
