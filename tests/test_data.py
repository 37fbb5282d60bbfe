"""The task loader: fixed splits, label ids that match their names, clear errors on bad input."""
from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import data_dir
from mtl_helpers import DataError, UnknownTaskError, load_task, task_schedule
from mtl_helpers.data import encode_rows, make_collator, normalize_text


def test_trec_splits_are_fixed_and_complete():
    full = load_task("trec")
    assert full.sizes() == {"train": 4941, "validation": 500, "test": 500}
    assert full.label_names == ["ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"]
    again = load_task("trec")
    assert again.splits["validation"] == full.splits["validation"]  # defined once, deterministically
    # train and validation together are the original train file less the 11 copies of test questions
    original = [json.loads(line) for line in open(data_dir() / "trec" / "train.jsonl")]
    combined = Counter(r["text"] for r in full.splits["train"] + full.splits["validation"])
    dropped = Counter(r["text"] for r in original) - combined
    assert sum(dropped.values()) == 11 and not combined - Counter(r["text"] for r in original)
    assert {normalize_text(t) for t in dropped} <= {normalize_text(r["text"]) for r in full.splits["test"]}


def test_label_ids_match_label_names():
    trec = load_task("trec")
    rows = trec.splits["train"] + trec.splits["validation"]
    serfdom = next(r for r in rows if r["text"].startswith("How did serfdom develop"))
    assert trec.label_names[serfdom["label"]] == "DESC"  # the dataset README's check row
    sst2 = load_task("sst2")
    assert sst2.label_names == ["negative", "positive"]
    assert sst2.sizes() == {"train": 59248, "validation": 872, "test": 872}  # train less phrases shared with held-out text
    assert sst2.label_counts("test") == {"negative": 428, "positive": 444}  # GLUE validation counts
    conll = load_task("conll2003")
    row = conll.splits["train"][0]
    assert row["text"][:2] == ["EU", "rejects"]
    assert [conll.label_names[i] for i in row["label"][:3]] == ["B-ORG", "O", "B-MISC"]


def test_rotten_tomatoes_subset_is_not_one_class():
    # the file lists all positives first; a subset must still hold both classes
    rt = load_task("rotten_tomatoes", max_train=200, max_eval=100)
    counts = rt.label_counts("train")
    assert min(counts.values()) > 60


def test_subsets_are_deterministic_and_nested():
    small = load_task("trec", max_train=50, max_eval=20)
    large = load_task("trec", max_train=400, max_eval=20)
    assert small.splits["train"] == load_task("trec", max_train=50, max_eval=20).splits["train"]
    assert len(small.splits["validation"]) == 20
    texts = {r["text"] for r in large.splits["train"]}
    assert all(r["text"] in texts for r in small.splits["train"])


def test_unknown_task_lists_known_ones():
    with pytest.raises(UnknownTaskError, match="Known tasks: .*sst2.*trec"):
        load_task("imdb")


@pytest.mark.parametrize("n", [0, 10**6])
def test_bad_subset_sizes_are_explained(n):
    with pytest.raises(DataError, match="trec train"):
        load_task("trec", max_train=n)


def test_missing_data_dir_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="MTL_DATA_DIR"):
        load_task("trec")


def test_folder_without_the_task_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"Looked in .*MTL_DATA_DIR.*Hugging Face hub \(CogComp/trec\)"):
        load_task("trec")


def _copy_trec(tmp_path):
    folder = tmp_path / "trec"
    shutil.copytree(data_dir() / "trec", folder)
    return folder


def test_malformed_json_line_names_file_and_line(tmp_path):
    folder = _copy_trec(tmp_path)
    lines = (folder / "train.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-5]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="train.jsonl line 3: malformed JSON"):
        load_task("trec", data_dir=tmp_path)


def test_missing_split_file(tmp_path):
    folder = _copy_trec(tmp_path)
    (folder / "test.jsonl").unlink()
    with pytest.raises(DataError, match="test.jsonl is missing"):
        load_task("trec", data_dir=tmp_path)


def test_label_outside_the_classes(tmp_path):
    folder = _copy_trec(tmp_path)
    rows = [json.loads(line) for line in (folder / "test.jsonl").read_text().splitlines()]
    rows[4]["coarse_label"] = 6
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="label 6 is outside the 6 classes"):
        load_task("trec", data_dir=tmp_path)


def test_empty_split(tmp_path):
    folder = _copy_trec(tmp_path)
    (folder / "test.jsonl").write_text("")
    with pytest.raises(DataError, match="test split is empty"):
        load_task("trec", data_dir=tmp_path)


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
