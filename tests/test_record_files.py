"""Record files: names that never collide, profile names that stay inside the results folder, the
book's own records not silently replaced, fetched records checked and refreshed, corrupt files named,
a stable reading order, and the digest that says which examples a run was scored on."""

from __future__ import annotations

import json
import re

import pytest

from mtl_helpers import MTLError, RunRecord, load_records, save_record
from mtl_helpers import records as results
from mtl_helpers.fetch import stored_records
from mtl_helpers.locations import results_dir
from conftest import sample_record as record


# -- 6a: file names are injective in the model name, and a save never replaces another key's file


def test_models_whose_names_differ_only_in_punctuation_keep_their_own_files(tmp_path):
    save_record(record(model="org/tiny-bert", acc=0.1), tmp_path)
    save_record(record(model="org_tiny-bert", acc=0.9), tmp_path)
    loaded = {r.model: r.metric("trec") for r in load_records("cpu", root=tmp_path)}
    assert loaded == {"org/tiny-bert": 0.1, "org_tiny-bert": 0.9}


def test_save_refuses_a_file_that_holds_another_key(tmp_path, monkeypatch):
    path = save_record(record(model="a"), tmp_path)
    monkeypatch.setattr(RunRecord, "file_name", lambda self: path.name)  # a forced collision
    with pytest.raises(MTLError, match=re.escape(path.name) + ".*holds another run"):
        save_record(record(model="b"), tmp_path)
    assert load_records("cpu", root=tmp_path)[0].model == "a"


# -- 6b: profile names are checked like scenario names


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", "Upper"])
def test_a_profile_name_cannot_leave_the_results_folder(tmp_path, name):
    with pytest.raises(MTLError, match="Profile name .* not allowed"):
        record(profile=name)
    good = record()
    good.profile = name  # set after construction: save_record checks again
    with pytest.raises(MTLError, match="Profile name .* not allowed"):
        save_record(good, tmp_path)
    with pytest.raises(MTLError, match="Profile name .* not allowed"):
        load_records(name, root=tmp_path)
    with pytest.raises(MTLError, match="Profile name .* not allowed"):
        results_dir(name)
    assert not any(tmp_path.parent.glob("x")) and list(tmp_path.rglob("*.json")) == []


# -- 6c: the book's committed records are not replaced by a run with another spec


@pytest.fixture
def inside_the_book(tmp_path, monkeypatch):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MTL_RESULTS_DIR", raising=False)
    monkeypatch.delenv("MTL_REPLACE_RECORDS", raising=False)
    return tmp_path


def test_the_books_record_is_not_replaced_by_a_run_with_another_spec(inside_the_book, monkeypatch):
    path = save_record(record(acc=0.9, extra={"spec_hash": "aaaa"}))
    assert path.parent.parent.parent == inside_the_book / "results"
    save_record(record(acc=0.8, extra={"spec_hash": "aaaa"}))  # the same spec: a re-run replaces it
    with pytest.raises(MTLError, match=r"another spec.*MTL_RESULTS_DIR.*make notebooks"):
        save_record(record(acc=0.1, extra={"spec_hash": "bbbb"}))
    assert load_records("cpu")[0].metric("trec") == 0.8
    save_record(record(acc=0.2, extra={"spec_hash": "bbbb"}), replace=True)
    assert load_records("cpu")[0].metric("trec") == 0.2
    monkeypatch.setenv("MTL_REPLACE_RECORDS", "1")
    save_record(record(acc=0.3, extra={"spec_hash": "cccc"}))
    assert load_records("cpu")[0].metric("trec") == 0.3


def test_a_readers_own_folder_takes_new_specs(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_RESULTS_DIR", str(tmp_path / "mine"))
    monkeypatch.delenv("MTL_REPLACE_RECORDS", raising=False)
    save_record(record(acc=0.9, extra={"spec_hash": "aaaa"}))
    save_record(record(acc=0.1, extra={"spec_hash": "bbbb"}))
    assert load_records("cpu")[0].metric("trec") == 0.1


# -- 6d: fetched records: names checked, refreshed, only the listed ones loaded


class FakeRepository:
    def __init__(self, folder):
        self.folder, self.index = folder, None

    def __call__(self, url):
        name = url.split("/results/cpu/")[1]
        if name == "index.json" and self.index is not None:
            return json.dumps({"records": self.index}).encode()
        return (self.folder / "cpu" / name).read_bytes()


def test_a_fetched_index_cannot_name_a_file_outside_the_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    published = tmp_path / "published"
    save_record(record(seed=0), published)
    fetch = FakeRepository(published)
    for bad in [
        "../../x.json",
        "head-only/../../../x.json",
        "/abs/x.json",
        "Bad Name/x.json",
        "x.json",
        "a/b/c.json",
        "head-only/x.txt",
    ]:
        fetch.index = [bad]
        records, why = stored_records("cpu", "https://github.com/owner/book", cache=tmp_path / "cache", fetch=fetch)
        assert records == [] and "not a record name" in why and repr(bad) in why
    assert not (tmp_path / "x.json").exists() and not list((tmp_path / "cache").rglob("*.json"))


def test_fetched_records_are_refreshed_and_unlisted_ones_are_not_loaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    published = tmp_path / "published"
    save_record(record(seed=0, acc=0.1), published)
    save_record(record(seed=1, acc=0.5), published)
    fetch = FakeRepository(published)
    first, _ = stored_records("cpu", "https://github.com/owner/book", cache=tmp_path / "cache", fetch=fetch)
    assert sorted((r.seed, r.metric("trec")) for r in first) == [(0, 0.1), (1, 0.5)]
    save_record(record(seed=0, acc=0.9), published)  # the book's record was re-run
    (published / "cpu" / "head-only" / record(seed=1).file_name()).unlink()  # and seed 1 withdrawn
    results.write_index(published / "cpu")
    again, _ = stored_records("cpu", "https://github.com/owner/book", cache=tmp_path / "cache", fetch=fetch)
    assert [(r.seed, r.metric("trec")) for r in again] == [(0, 0.9)]


# -- 7a: a record file of the wrong shape is named as corrupt


@pytest.mark.parametrize("content", ["[1, 2]", "null", '"text"'])
def test_a_record_file_that_is_not_an_object_is_corrupt(tmp_path, content):
    path = save_record(record(), tmp_path)
    path.write_text(content)
    with pytest.raises(MTLError, match=re.escape(path.name) + r" is corrupt"):
        load_records("cpu", root=tmp_path)


@pytest.mark.parametrize(
    "field,value",
    [
        ("metrics", None),
        ("outcomes", [1]),
        ("tasks", None),
        ("seed", "0"),
        ("extra", None),
        ("model", 3),
        ("examples", "x"),
        ("interrupted", "no"),
    ],
)
def test_a_record_field_of_the_wrong_type_is_corrupt(tmp_path, field, value):
    path = save_record(record(), tmp_path)
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(MTLError, match=re.escape(path.name) + r" is corrupt.*" + field):
        load_records("cpu", root=tmp_path)


# -- 4: a stable reading order


def test_records_load_in_numeric_seed_order(tmp_path):
    for seed in (10, 2, 1):
        save_record(record(seed=seed), tmp_path)
    save_record(record(scenario="a-first", seed=3), tmp_path)
    assert [(r.scenario, r.seed) for r in load_records("cpu", root=tmp_path)] == [
        ("a-first", 3),
        ("head-only", 1),
        ("head-only", 2),
        ("head-only", 10),
    ]


# -- 3: the digest of the examples a run was scored on


def test_the_examples_digest_tells_data_copies_apart(trec):
    from mtl_helpers.records import examples_digest

    rows = trec.splits["validation"]
    digest = examples_digest(rows)
    assert re.fullmatch(r"[0-9a-f]{64}", digest) and digest == examples_digest([dict(r) for r in rows])
    assert examples_digest(rows[1:] + rows[:1]) != digest  # the order of the outcomes is part of it
    assert examples_digest(rows[:-1]) != digest
    relabelled = [dict(r) for r in rows]
    relabelled[0]["label"] = (relabelled[0]["label"] + 1) % len(trec.label_names)
    assert examples_digest(relabelled) != digest
