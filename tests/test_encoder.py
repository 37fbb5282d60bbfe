"""The offline default encoder, mean pooling, and clear errors for models that cannot load."""

from __future__ import annotations

import pytest
import torch

from mtl_helpers import (
    DEFAULT_MODEL_ID,
    ModelLoadError,
    MultiTaskModel,
    layer_groups,
    load_encoder,
    load_task,
    mean_pool,
)
from mtl_helpers.train import model_label


def test_mean_pool_ignores_padding():
    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(mean_pool(states, mask), torch.tensor([[2.0, 3.0]]))


@pytest.mark.slow
def test_default_encoder_is_minilm_offline():
    encoder, tokenizer = load_encoder()
    assert type(encoder).__name__ == "BertModel"
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    assert sum(p.numel() for p in encoder.parameters()) == 22_713_216
    model = MultiTaskModel.for_tasks(encoder, [load_task("trec", max_train=8, max_eval=8)])
    assert list(layer_groups(model))[:2] == ["embeddings", "layer.0"] and len(layer_groups(model)) == 8
    assert model_label(model) == DEFAULT_MODEL_ID  # never the local folder path
    batch = tokenizer(["How far is it from Denver to Aspen ?"], return_tensors="pt")
    with torch.no_grad():
        assert model("trec", batch).shape == (1, 6)


def test_unknown_model_offline_names_the_default():
    with pytest.raises(
        ModelLoadError, match=r"Could not load encoder 'no-such-org/no-such-model'.*load_encoder\(\) with no argument"
    ):
        load_encoder("no-such-org/no-such-model")


def test_missing_model_folder():
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_encoder("/nonexistent/model/folder")


def test_a_half_precision_checkpoint_loads_in_float32(tmp_path, tokenizer):
    """transformers 5 keeps a checkpoint's stored dtype unless told otherwise; training must run in fp32."""
    from conftest import tiny_bert

    tiny_bert().half().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    encoder, _ = load_encoder(str(tmp_path))
    assert {p.dtype for p in encoder.parameters()} == {torch.float32}


def test_truncated_encoder_keeps_the_lower_layers_and_says_so(tokenizer):
    from conftest import tiny_bert

    from mtl_helpers import truncate_encoder
    from mtl_helpers.train import model_label

    full = tiny_bert(layers=3)
    kept = [p.clone() for p in full.encoder.layer[0].parameters()]
    cut = truncate_encoder(full, 1)
    assert len(cut.encoder.layer) == 1 and cut.config.num_hidden_layers == 1
    assert all(torch.equal(a, b) for a, b in zip(kept, cut.encoder.layer[0].parameters()))
    model = MultiTaskModel.for_tasks(cut, [load_task("trec", max_train=8, max_eval=8)])
    assert list(layer_groups(model))[:3] == ["embeddings", "layer.0", "head.trec"]
    assert model_label(model).endswith("[:1]")
    with pytest.raises(ValueError, match="n_layers must be an integer from 1 to 1"):
        truncate_encoder(cut, 2)
