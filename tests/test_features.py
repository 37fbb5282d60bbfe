"""The process-wide feature cache: features are shared only between backbones with identical weights."""

from __future__ import annotations

import copy

import torch

from mtl_helpers import FeatureCache, TokenizedTasks, freeze
from mtl_helpers.features import embed_rows


def _cache(model, tokenizer, trec) -> FeatureCache:
    return FeatureCache(model, TokenizedTasks({"trec": trec}, tokenizer), torch.device("cpu"), 64)


def test_swapping_two_token_embeddings_gives_new_features(make_model, tokenizer, trec):
    """Swapping two rows of the word-embedding matrix keeps every per-tensor sum, but changes what
    the backbone computes: the cache must embed anew instead of returning the first model's features."""
    model = make_model([trec])
    freeze(model, "backbone")
    original = torch.stack([r["features"] for r in _cache(model, tokenizer, trec).rows("trec", "validation")])

    swapped = copy.deepcopy(model)
    first_ids = TokenizedTasks({"trec": trec}, tokenizer).rows("trec", "validation")[0]["input_ids"]
    a, b = first_ids[1], first_ids[2]  # two different tokens of a sentence that the cache embeds
    assert a != b
    table = swapped.encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[[a, b]] = table[[b, a]].clone()

    cache = _cache(swapped, tokenizer, trec)
    features = torch.stack([r["features"] for r in cache.rows("trec", "validation")])
    tokens = cache.tokenized.rows("trec", "validation")
    fresh = embed_rows(swapped, tokens, cache.tokenized.collator("trec"), torch.device("cpu"), 64)
    assert not torch.equal(features, original)
    assert torch.equal(features, fresh)


def test_a_copy_with_the_same_weights_shares_the_features(make_model, tokenizer, trec):
    model = make_model([trec])
    freeze(model, "backbone")
    first = _cache(model, tokenizer, trec).rows("trec", "validation")
    second = _cache(copy.deepcopy(model), tokenizer, trec).rows("trec", "validation")
    assert all(a["features"].data_ptr() == b["features"].data_ptr() for a, b in zip(first, second))  # one tensor
