"""From rows to batches: first-sub-token labels, dynamic padding, task schedules, the multi-task stream."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from mtl_helpers import load_task, make_loader, multitask_stream, task_schedule
from mtl_helpers.batches import encode_rows, make_collator


def test_token_labels_sit_on_the_first_sub_token(tokenizer):
    conll = load_task("conll2003", max_train=30, max_eval=10)
    row = {"text": ["Washington", "unbelievably", "rejects"], "label": [5, 0, 0]}
    encoded = encode_rows(conll, [row], tokenizer)[0]
    words = tokenizer(row["text"], is_split_into_words=True).word_ids()
    assert encoded["labels"][0] == -100 and encoded["labels"][-1] == -100  # [CLS], [SEP]
    firsts = [i for i, w in enumerate(words) if w is not None and (i == 0 or words[i - 1] != w)]
    assert [encoded["labels"][i] for i in firsts] == [5, 0, 0]
    assert sum(label != -100 for label in encoded["labels"]) == 3


def test_dynamic_padding_pads_to_the_longest_row(tokenizer, trec):
    rows = encode_rows(trec, trec.splits["train"][:8], tokenizer)
    longest = max(len(r["input_ids"]) for r in rows)
    dynamic = make_collator(trec, tokenizer)(rows)
    fixed = make_collator(trec, tokenizer, padding="max_length", max_length=128)(rows)
    assert dynamic["input_ids"].shape == (8, longest) and longest < 128
    assert fixed["input_ids"].shape == (8, 128)
    assert torch.equal(dynamic["labels"], fixed["labels"])


def test_task_schedules():
    sizes = {"a": 30, "b": 10}
    proportional = task_schedule(sizes, "proportional", rng=np.random.default_rng(1))
    assert Counter(proportional) == sizes
    assert task_schedule(sizes, "round_robin")[:4] == ["a", "b", "a", "b"]
    drawn = Counter(task_schedule({"a": 3000, "b": 1000}, "temperature", temperature=1e9, rng=np.random.default_rng(0)))
    assert abs(drawn["a"] - drawn["b"]) < 300  # a huge temperature flattens toward uniform
    with pytest.raises(ValueError, match="Unknown sampling strategy"):
        task_schedule(sizes, "random")


def test_the_stream_restarts_a_task_that_runs_out_and_covers_each_epoch():
    loaders = {
        "a": make_loader(list(range(6)), lambda b: b, 2, shuffle=True),
        "b": make_loader(list(range(2)), lambda b: b, 2, shuffle=True),
    }
    stream = multitask_stream(loaders, "round_robin")
    tasks = [next(stream)[0] for _ in range(8)]
    assert Counter(tasks) == {"a": 4, "b": 4}  # b's single batch is drawn again and again
