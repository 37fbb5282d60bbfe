"""The task loader: fixed splits, label ids that match their names, clear errors on bad input."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import data_dir
from mtl_helpers import TASKS, DataError, UnknownTaskError, load_task
from mtl_helpers.leakage import normalize_text


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
    assert sst2.sizes() == {
        "train": 59248,
        "validation": 872,
        "test": 872,
    }  # train less phrases shared with held-out text
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
    with pytest.raises(DataError, match="trec/test.jsonl line 5: label 6 is outside the 6 classes"):
        load_task("trec", data_dir=tmp_path)


# ---------------------------------------------------------------- errors that name the source row


def _rewrite(path, edit):
    """Apply `edit(rows)` to a JSON Lines file in place."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    edit(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "label, problem",
    [
        (True, "label True is not an integer class id"),  # isinstance(True, int) holds in Python
        (2.0, "label 2.0 is not an integer class id"),
        ("DESC", "label 'DESC' is not an integer class id .*the name 'DESC' has id 2"),
        (-1, "label -1 is outside the 6 classes"),
    ],
)
def test_bad_label_names_file_and_line_before_splitting(tmp_path, label, problem):
    folder = _copy_trec(tmp_path)
    _rewrite(folder / "train.jsonl", lambda rows: rows[10].update(coarse_label=label))
    with pytest.raises(DataError, match=rf"trec/train.jsonl line 11: {problem}.*correct that row"):
        load_task("trec", data_dir=tmp_path)


def test_null_text_names_file_and_line(tmp_path):
    folder = _copy_trec(tmp_path)
    _rewrite(folder / "train.jsonl", lambda rows: rows[4].update(text=None))
    with pytest.raises(DataError, match=r"trec/train.jsonl line 5: text None is not a non-empty string"):
        load_task("trec", data_dir=tmp_path)


def _tiny_conll(tmp_path, edit=None):
    folder = tmp_path / "conll2003"
    folder.mkdir()
    shutil.copy(data_dir() / "conll2003" / "features.json", folder)
    for split in ("train", "validation", "test"):
        with open(data_dir() / "conll2003" / f"{split}.jsonl") as handle:
            rows = [json.loads(next(handle)) for _ in range(4)]
        if edit and split == "train":
            edit(rows)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.mark.parametrize(
    "tokens, problem",
    [
        ("EU rejects German call", "tokens 'EU rejects German call' is not a non-empty list of strings"),
        (["EU", 7], r"tokens \['EU', 7\] is not a non-empty list of strings"),
        ([], r"tokens \[\] is not a non-empty list of strings"),
    ],
)
def test_bad_tokens_name_file_and_line(tmp_path, tokens, problem):
    _tiny_conll(tmp_path, lambda rows: rows[2].update(tokens=tokens))
    with pytest.raises(DataError, match=rf"conll2003/train.jsonl line 3: {problem}"):
        load_task("conll2003", data_dir=tmp_path)


def test_tags_that_do_not_fit_the_tokens(tmp_path):
    _tiny_conll(tmp_path, lambda rows: rows[1].update(ner_tags=rows[1]["ner_tags"][:-1]))
    with pytest.raises(DataError, match=r"conll2003/train.jsonl line 2: \d+ tokens but \d+ tags"):
        load_task("conll2003", data_dir=tmp_path)


@pytest.mark.parametrize(
    "content, problem",
    [
        (
            '{"fine_label": ["ABBR:abb"]}',
            r"trec/features.json has no 'coarse_label' field \(found: 'fine_label'\).*Add it: \{\"coarse_label\": "
            r"\[\"ABBR\"",
        ),
        (
            '{"coarse_label": ["ABBR", "ENTY",',
            r"trec/features.json is not valid JSON \(.*line 1 column \d+\). Repair it or re-copy it",
        ),
        ('{"coarse_label": ["ENTY", "ABBR", "DESC", "HUM", "LOC", "NUM"]}', r"ids would mean different classes"),
    ],
)
def test_bad_features_file(tmp_path, content, problem):
    folder = _copy_trec(tmp_path)
    (folder / "features.json").write_text(content)
    with pytest.raises(DataError, match=problem):
        load_task("trec", data_dir=tmp_path)


@pytest.mark.parametrize(
    "content, problem",
    [
        ('{"coarse_label": 6}', r"trec/features.json: 'coarse_label' is 6 \(int\), not a list of label names"),
        ('{"coarse_label": "ABBR ENTY"}', r"trec/features.json: 'coarse_label' is 'ABBR ENTY' \(str\), not a list"),
        (
            '{"coarse_label": [0, 1, 2, 3, 4, 5]}',
            r"trec/features.json: 'coarse_label' is \[0, 1, 2, 3, 4, 5\] \(list\)",
        ),
    ],
)
def test_features_file_whose_names_are_not_a_list_of_strings(tmp_path, content, problem):
    folder = _copy_trec(tmp_path)
    (folder / "features.json").write_text(content)
    with pytest.raises(DataError, match=problem + r".*Re-copy the trec folder \(python scripts/fetch_data.py DIR"):
        load_task("trec", data_dir=tmp_path)


def test_features_file_that_is_not_utf8_names_file_line_and_fix(tmp_path):
    folder = _copy_trec(tmp_path)
    text = (folder / "features.json").read_bytes()
    (folder / "features.json").write_bytes(text.replace(b'"HUM"', b'"H\xffM"'))  # line 6: {, the field, 3 names
    with pytest.raises(
        DataError,
        match=r"trec/features.json line 6 is not UTF-8 text \(.*byte \d+\)\. "
        r"Re-copy the trec folder \(python scripts/fetch_data.py DIR",
    ):
        load_task("trec", data_dir=tmp_path)


def test_jsonl_file_that_is_not_utf8_names_file_line_and_fix(tmp_path):
    folder = _copy_trec(tmp_path)
    lines = (folder / "test.jsonl").read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b'"text": "', b'"text": "\xe9', 1)  # a Latin-1 byte where UTF-8 needs two
    (folder / "test.jsonl").write_bytes(b"\n".join(lines))
    with pytest.raises(
        DataError,
        match=r"trec/test.jsonl line 7 is not UTF-8 text \(.*byte \d+\)\. Re-copy the trec "
        r"folder \(python scripts/fetch_data.py DIR",
    ):
        load_task("trec", data_dir=tmp_path)


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"max_train": 100.0}, r"trec train \(max_train\): expected a whole number of rows or None .*100.0 \(float\)"),
        ({"max_train": 0.5}, r"trec train \(max_train\): expected a whole number"),
        ({"max_train": True}, r"trec train \(max_train\): expected a whole number .*\(bool\)"),
        ({"max_train": "100"}, r"trec train \(max_train\): expected a whole number .*\(str\)"),
        ({"max_train": -5}, r"trec train \(max_train\): a subset needs at least 1 row, got -5"),
        (
            {"max_eval": 0},
            r"trec validation and test \(max_eval\): a subset needs at least 1 row, got 0. Pass a positive",
        ),
        ({"max_eval": 2.5}, r"trec validation and test \(max_eval\): expected a whole number"),
    ],
)
def test_bad_subset_arguments_name_the_parameter(kwargs, problem):
    with pytest.raises(DataError, match=problem):
        load_task("trec", **kwargs)


def test_registry_label_names_equal_the_offline_copies():
    for name, spec in TASKS.items():
        features = json.loads((data_dir() / name / "features.json").read_text())
        assert list(spec.label_names) == features[spec.label_field], name


# ---------------------------------------------------------------- the hub path, through a local mirror

MIRROR_ROWS = 60


def _first_rows(shared, name, source, n=MIRROR_ROWS):
    with open(shared / name / f"{source}.jsonl") as handle:
        return [json.loads(line) for line, _ in zip(handle, range(n))]


@pytest.fixture
def hub_mirror(tmp_path, monkeypatch):
    """The first rows of TREC and SST-2 as parquet files in the hub's layout, standing in for the hub;
    the tasks hold out 3 rows, since a few rows cannot give 500 or 872."""
    import datasets
    import pandas as pd

    shared, mirror = data_dir(), tmp_path / "mirror"
    for name in ("trec", "sst2"):
        spec = TASKS[name]
        for source, path in spec.hub_files.items():
            target = mirror / f"{spec.hub_id}@{spec.hub_revision}" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(_first_rows(shared, name, source)).to_parquet(target, index=False)
        monkeypatch.setitem(TASKS, name, dataclasses.replace(spec, holdout=3))
    monkeypatch.delenv("MTL_DATA_DIR", raising=False)
    monkeypatch.setenv("MTL_HUB_MIRROR", str(mirror))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # not the user's cache
    return SimpleNamespace(path=mirror, shared=shared)


def _local_copy(shared, tmp_path, name):
    """The same first rows as JSON Lines, the offline layout."""
    folder = tmp_path / "local" / name
    folder.mkdir(parents=True)
    shutil.copy(shared / name / "features.json", folder)
    for source in TASKS[name].hub_files:
        (folder / f"{source}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in _first_rows(shared, name, source))
        )
    return folder.parent


def test_hub_mirror_gives_the_rows_of_the_local_copy(hub_mirror, tmp_path):
    local = _local_copy(hub_mirror.shared, tmp_path, "trec"), _local_copy(hub_mirror.shared, tmp_path, "sst2")
    for name, label_field, test_source in (("trec", "coarse_label", "test"), ("sst2", "label", "validation")):
        hub = load_task(name)
        assert hub.source.startswith("the hub mirror") and hub.label_names == list(TASKS[name].label_names)
        assert hub.splits == load_task(name, data_dir=local[0]).splits
        text_field = TASKS[name].text_field
        expected = _first_rows(hub_mirror.shared, name, test_source)
        assert hub.splits["test"] == [{"text": r[text_field], "label": r[label_field]} for r in expected]
        assert hub.split_report["train_source_rows"] == MIRROR_ROWS and hub.sizes()["validation"] == 3


def test_hub_rows_are_checked_with_their_source(hub_mirror):
    import pandas as pd

    spec = TASKS["trec"]
    path = hub_mirror.path / f"{spec.hub_id}@{spec.hub_revision}" / spec.hub_files["train"]
    frame = pd.read_parquet(path)
    frame.loc[7, "coarse_label"] = 9
    frame.to_parquet(path, index=False)
    with pytest.raises(DataError, match=r"hub CogComp/trec@65752bf train row 7: label 9 is outside the 6 classes"):
        load_task("trec")


def test_missing_mirror_file_says_where_it_looked(hub_mirror):
    spec = TASKS["trec"]
    (hub_mirror.path / f"{spec.hub_id}@{spec.hub_revision}" / spec.hub_files["test"]).unlink()
    with pytest.raises(
        DataError, match=r"Looked in no local folder .*MTL_HUB_MIRROR.*Put the files at .*default/test/0000.parquet"
    ):
        load_task("trec")


def test_fetch_data_writes_the_offline_layout(hub_mirror, tmp_path, capsys):
    script = importlib.util.spec_from_file_location(
        "fetch_data", Path(__file__).parents[1] / "scripts" / "fetch_data.py"
    )
    fetch_data = importlib.util.module_from_spec(script)
    script.loader.exec_module(fetch_data)
    target = tmp_path / "fetched"
    assert fetch_data.main([str(target), "--tasks", "trec", "sst2"]) == 0
    assert "trec: CogComp/trec@65752bf" in capsys.readouterr().out
    for name in ("trec", "sst2"):
        for source in TASKS[name].hub_files:
            written = [json.loads(line) for line in open(target / name / f"{source}.jsonl")]
            assert written == _first_rows(hub_mirror.shared, name, source)
        features = json.loads((target / name / "features.json").read_text())
        assert features[TASKS[name].label_field] == list(TASKS[name].label_names)
        assert load_task(name, data_dir=target).splits == load_task(name).splits


def test_empty_split(tmp_path):
    folder = _copy_trec(tmp_path)
    (folder / "test.jsonl").write_text("")
    with pytest.raises(DataError, match="test split is empty"):
        load_task("trec", data_dir=tmp_path)


def test_the_registry_says_which_tasks_share_their_labels():
    """A head moves between data sets only when the registry says their label ids mean the same classes
    ("neg" in Rotten Tomatoes is "negative" in SST-2); not by the first letters of the names."""
    from mtl_helpers.tasks import TASKS, same_labels

    assert same_labels(TASKS["sst2"], TASKS["rotten_tomatoes"])
    assert not same_labels(TASKS["sst2"], TASKS["trec"])
    assert not same_labels(TASKS["conll2003"], TASKS["wnut_17"])


def test_max_test_caps_the_test_split_apart_from_validation():
    # verdicts are decided on every leak-free test row while validation stays at the profile's size
    whole = load_task("trec", max_train=20, max_eval=30, max_test=None)
    assert len(whole.splits["validation"]) == 30 and len(whole.splits["test"]) == 500
    assert len(load_task("trec", max_train=20, max_eval=30).splits["test"]) == 30  # by default it follows max_eval
    assert len(load_task("trec", max_train=20, max_eval=30, max_test=40).splits["test"]) == 40
    with pytest.raises(DataError, match=r"trec test \(max_test\)"):
        load_task("trec", max_train=20, max_test=0)
