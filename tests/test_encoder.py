"""The offline default encoder, mean pooling, and clear errors for models that cannot load."""
from __future__ import annotations

import pytest
import torch

from mtl_helpers import DEFAULT_MODEL_ID, ModelLoadError, MultiTaskModel, layer_groups, load_encoder, load_task, mean_pool
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
    with pytest.raises(ModelLoadError, match=r"Could not load encoder 'no-such-org/no-such-model'.*load_encoder\(\) with no argument"):
        load_encoder("no-such-org/no-such-model")


def test_missing_model_folder():
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_encoder("/nonexistent/model/folder")
