"""Accuracy by layer: one probe per layer (embeddings' output = layer 0, then 1..N), whose last layer's
features are the book's sentence embeddings, computed without changing the encoder; and its figure."""

from __future__ import annotations

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import tiny_model  # noqa: E402
from mtl_helpers import MTLError, MultiTaskModel, embed_texts, load_encoder  # noqa: E402
from mtl_helpers.batches import make_collator  # noqa: E402
from mtl_helpers.layer_probe import (  # noqa: E402
    COLUMNS,
    INTERVAL,
    compare_layers,
    layer_features,
    layer_probe,
    wilson_interval,
)
from mtl_helpers.plots import plot_accuracy_by_layer  # noqa: E402

LAYERS = 3  # the tiny model's


@pytest.fixture(scope="module")
def probed(trec, sst2, tokenizer):
    model = tiny_model([trec, sst2], layers=LAYERS)
    model.train()  # the probe must put it in eval mode and back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.requires_grad for k, p in model.named_parameters()}
    frame = layer_probe(model, tokenizer, [trec, sst2], progress=False)
    return model, before, grads, frame


def test_one_row_per_layer_and_task_with_an_interval_around_the_accuracy(probed, trec, sst2):
    _, _, _, frame = probed
    assert list(frame.columns) == [*COLUMNS, "test outcomes"] and frame.attrs["interval"] == INTERVAL
    for task in (trec, sst2):
        part = frame[frame["task"] == task.name]
        assert part["layer"].tolist() == list(range(LAYERS + 1))
        assert (part["n_test"] == len(task.splits["test"])).all()
        for _, row in part.iterrows():  # the outcomes are the accuracy's
            assert len(row["test outcomes"]) == row["n_test"] and row["test outcomes"].mean() == row["test accuracy"]
    assert (frame["test low"] <= frame["test accuracy"]).all() and (frame["test accuracy"] <= frame["test high"]).all()
    assert frame["validation accuracy"].between(0, 1).all()
    assert frame["edge"].map(lambda e: e == "interior" or e.startswith("edge: ")).all()


def test_the_encoder_is_left_as_it_was(probed):
    model, before, grads, _ = probed
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert grads == {k: p.requires_grad for k, p in model.named_parameters()}
    assert model.training  # its mode restored


def test_the_last_layer_is_the_books_sentence_embedding(trec, tokenizer):
    model = tiny_model([trec], layers=LAYERS)
    texts = [r["text"] for r in trec.splits["test"]]
    features = layer_features(model, tokenizer, texts, batch_size=7)
    assert features.shape == (len(texts), LAYERS + 1, model.hidden_size)
    torch.testing.assert_close(features[:, -1], embed_texts(model, tokenizer, texts), atol=1e-5, rtol=0)
    # and MultiTaskModel.embed on one padded batch of all the rows, in their order
    rows = [{**tokenizer(t, truncation=True, max_length=128)} for t in texts]
    batch = make_collator(trec, tokenizer, "longest", 128)(rows)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(features[:, -1], model.embed(batch), atol=1e-5, rtol=0)
    # the encoder alone gives the same features as the model around it
    torch.testing.assert_close(layer_features(model.encoder, tokenizer, texts[:5]), features[:5], atol=1e-5, rtol=0)


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(MTLError):
        wilson_interval(0, 0)


def test_token_tasks_are_refused(tokenizer, trec):
    token = dataclasses.replace(trec, name="ner", level="token")
    with pytest.raises(MTLError, match="token-level"):
        layer_probe(tiny_model([trec]), tokenizer, [token], progress=False)


def test_the_figure_fits_the_column(probed):
    _, _, _, frame = probed
    ax = plot_accuracy_by_layer(frame)
    try:
        fig = ax.figure
        assert fig.get_figwidth() * fig.dpi <= 740
        assert [t.get_text() for t in ax.get_xticklabels()] == ["embeddings", *map(str, range(1, LAYERS + 1))]
        assert len(ax.get_legend().get_texts()) == 2
    finally:
        plt.close(ax.figure)


@pytest.mark.slow
def test_the_real_model_last_layer_matches_embed_texts(sst2):
    encoder, tokenizer = load_encoder()
    model = MultiTaskModel.for_tasks(encoder, [sst2])
    texts = [r["text"] for r in sst2.splits["validation"][:32]]
    features = layer_features(model, tokenizer, texts)
    assert features.shape == (32, 7, 384)
    torch.testing.assert_close(features[:, -1], embed_texts(model, tokenizer, texts), atol=1e-5, rtol=0)
    assert not np.allclose(features[:, 0].numpy(), features[:, -1].numpy())


def test_two_layers_are_compared_paired_on_the_test_rows(probed, trec):
    _, _, _, frame = probed
    c = compare_layers(frame, trec, LAYERS, 0)
    rows = frame[frame["task"] == trec.name].set_index("layer")
    assert c.effect == pytest.approx(rows.loc[LAYERS, "test accuracy"] - rows.loc[0, "test accuracy"])
    assert c.low <= c.effect <= c.high and c.paired and c.examples == len(trec.splits["test"])
    assert (c.a, c.b) == (f"layer {LAYERS}", "layer 0")
    with pytest.raises(MTLError, match="no single row"):
        compare_layers(frame, trec, LAYERS + 5, 0)
