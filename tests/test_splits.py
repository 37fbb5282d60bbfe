"""Held-out splits share no text with train: the rule itself, and every task's real splits."""

from __future__ import annotations

import hashlib
import json
import statistics

import pytest

from conftest import data_dir
import mtl_helpers.loading as loading_module
from mtl_helpers import TASKS, load_task
from mtl_helpers.leakage import normalize_text, split_overlap
from mtl_helpers.loading import _CACHE, split_table

CLEAN = {"heldout_in_train": 0, "train_in_heldout": 0, "train_rows": 0}


def texts(task, split):
    return [r["text"] for r in task.splits[split]]


def fingerprint(rows) -> str:
    return hashlib.sha256("\n".join(normalize_text(r["text"]) for r in rows).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the rule, on made-up texts


def test_containment_matches_whole_words_only():
    assert split_overlap(["it 's badder than bad ."], ["bad ."])["heldout_in_train"] == 1
    assert split_overlap(["it 's badder than you think"], ["bad"])["heldout_in_train"] == 0
    assert split_overlap(["a bad movie"], ["bad movie"]) == {
        "heldout_in_train": 1,
        "train_in_heldout": 0,
        "train_rows": 1,
    }


def test_equal_texts_count_after_normalising_case_and_spaces():
    assert split_overlap(["The  Film is GOOD "], ["the film is good"]) == {
        "heldout_in_train": 1,
        "train_in_heldout": 1,
        "train_rows": 1,
    }


def test_short_training_texts_may_occur_inside_held_out_text():
    held = ["the film is a triumph of style over substance ."]
    assert split_overlap(["the film", "triumph"], held) == CLEAN  # one or two words: too common to leak
    assert split_overlap(["a triumph of"], held) == {"heldout_in_train": 0, "train_in_heldout": 1, "train_rows": 1}
    assert split_overlap(["a triumph of"], held, min_words=4) == CLEAN


def test_exact_mode_counts_duplicate_sentences_only():
    train = [
        ["EU", "rejects", "German", "call"],
        ["Peter", "Blackburn"],
        ["the", "EU", "rejects", "German", "call", "today"],
    ]
    held = [["eu", "rejects", "german", "call"], ["Peter", "Blackburn"]]
    assert split_overlap(train, held, exact=True) == {"heldout_in_train": 1, "train_in_heldout": 1, "train_rows": 1}


# ---------------------------------------------------------------- the real splits


def test_sst2_holds_out_whole_sentences_that_share_no_text_with_train():
    data_dir()
    sst2 = load_task("sst2")
    assert split_overlap(texts(sst2, "train"), texts(sst2, "validation") + texts(sst2, "test")) == CLEAN
    lengths = {s: statistics.median(len(t.split()) for t in texts(sst2, s)) for s in ("train", "validation", "test")}
    assert min(len(t.split()) for t in texts(sst2, "validation")) >= 10
    assert lengths["validation"] >= 15 and lengths["train"] < 10  # sentences like test's, not phrases like train's
    assert sst2.label_counts("test") == {"negative": 428, "positive": 444}  # the official split, untouched


def test_trec_validation_and_test_share_no_text_with_train():
    data_dir()
    trec = load_task("trec")
    for split in ("validation", "test"):
        assert split_overlap(texts(trec, "train"), texts(trec, split)) == CLEAN, split
    report = trec.split_report["test"]
    assert report["overlap_before"]["heldout_in_train"] == 11 and report["dropped_from_train"] == 11
    original = [normalize_text(json.loads(line)["text"]) for line in open(data_dir() / "trec" / "train.jsonl")]
    assert all(original.count(normalize_text(t)) == 1 for t in texts(trec, "validation"))  # no duplicates held out


def test_rotten_tomatoes_official_splits_are_kept_and_train_pruned():
    data_dir()
    rt = load_task("rotten_tomatoes")
    for split in ("validation", "test"):
        assert split_overlap(texts(rt, "train"), texts(rt, split)) == CLEAN, split
        assert texts(rt, split) == [
            json.loads(line)["text"] for line in open(data_dir() / "rotten_tomatoes" / f"{split}.jsonl")
        ]
    assert rt.split_report["dropped_from_train"] == 8


@pytest.mark.parametrize("name", ["conll2003", "wnut_17"])
def test_token_tasks_hold_no_duplicate_sentences(name):
    data_dir()
    task = load_task(name)
    for split in ("validation", "test"):
        assert split_overlap(texts(task, "train"), texts(task, split), exact=True) == CLEAN, split


@pytest.mark.parametrize("name", sorted(TASKS))
def test_report_counts_add_up(name):
    data_dir()
    task = load_task(name)
    report = task.split_report
    assert (
        report["train_source_rows"]
        == report["train_rows"] + report["held_out_from_train"] + report["dropped_from_train"]
    )
    assert task.sizes() == {
        "train": report["train_rows"],
        "validation": report["validation"]["rows"],
        "test": report["test"]["rows"],
    }
    per_split = [report[s]["dropped_from_train"] for s in ("validation", "test")]
    assert max(per_split) <= report["dropped_from_train"] <= sum(per_split)  # a row may clash with both
    for split in ("validation", "test"):
        assert report[split]["overlap_after"] == CLEAN
        assert report[split]["overlap_before"]["train_rows"] == report[split]["dropped_from_train"]
    assert str(report["dropped_from_train"]) in task.describe()


def test_splits_are_fixed_once():
    data_dir()
    assert fingerprint(load_task("sst2").splits["validation"]) == "66fc95b4dd3bcba4"
    trec = load_task("trec")
    assert fingerprint(trec.splits["validation"]) == "20ca4d5e66e1772d"
    for key in [k for k in _CACHE if k[0].startswith("TaskSpec(name='trec'")]:
        del _CACHE[key]  # computed again from the files, not taken from the cache
    assert load_task("trec").splits == trec.splits


def test_subsets_are_taken_after_pruning_and_loads_are_cached(monkeypatch):
    data_dir()
    # Reading the files and forming the leak-free splits take seconds for SST-2: once per process, however
    # many subsets are asked for. Count both, from an empty cache for SST-2.
    calls = {"load_local": 0, "form_splits": 0}
    for name in calls:
        original = getattr(loading_module, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(loading_module, name, counted)
    for key in [k for k in _CACHE if k[0].startswith("TaskSpec(name='sst2'")]:
        del _CACHE[key]
    full = load_task("sst2")
    assert calls == {"load_local": 1, "form_splits": 1}
    small = load_task("sst2", max_train=300, max_eval=50)
    assert calls == {"load_local": 1, "form_splits": 1}, "a subset formed the splits again"
    train = {r["text"] for r in full.splits["train"]}
    assert len(small.splits["train"]) == 300 and all(r["text"] in train for r in small.splits["train"])
    small.splits["train"][0]["text"] = "edited"  # a caller's edit does not reach later loads
    assert load_task("sst2", max_train=300).splits["train"][0]["text"] != "edited"
    assert calls == {"load_local": 1, "form_splits": 1}


def test_split_table_shows_before_and_after_per_task():
    data_dir()
    table = split_table(["trec", "rotten_tomatoes"])
    assert [(r["task"], r["split"]) for r in table] == [
        ("trec", "validation"),
        ("trec", "test"),
        ("rotten_tomatoes", "validation"),
        ("rotten_tomatoes", "test"),
    ]
    assert table[1]["heldout_in_train"] == 11 and all(r["train_rows_after"] == 0 for r in table)


def test_rows_sharing_text_finds_both_directions():
    from mtl_helpers.leakage import rows_sharing_text

    train = ["a fine film", "the plot", "utterly dull and long"]
    held = ["A fine film indeed", "nothing shared here at all", "dull", "it is utterly dull and long , sadly"]
    assert rows_sharing_text(train, held) == {0, 2, 3}  # 0 and 3 contain a 3+-word training text; 2 sits inside one


def test_out_of_distribution_rotten_tomatoes_shares_no_text_with_sst2_training():
    data_dir()
    from mtl_helpers import get_profile, split_overlap
    from mtl_helpers.arms import clean_rotten_tomatoes

    rt = clean_rotten_tomatoes(get_profile("cpu"))
    sst2_train = [r["text"] for r in load_task("sst2").splits["train"]]
    assert split_overlap(sst2_train, [r["text"] for r in rt.splits["test"]])["train_rows"] == 0
    report = rt.split_report["sst2_overlap"]
    assert report["test_rows"] == 1066 and 0 < report["sharing_text_with_sst2_train"] < 1066
    # the cpu profile scores every clean row out of distribution, as it scores every test row
    assert len(rt.splits["test"]) == report["test_rows"] - report["sharing_text_with_sst2_train"]
