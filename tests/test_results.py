"""Run records: one dataclass, keyed by scenario, tasks, model, profile and seed; strict JSON written
atomically; collecting filters on the keys and refuses to mix tasks or models."""

from __future__ import annotations

import json
import re
import os

import numpy as np
import pytest

from mtl_helpers import MTLError, RunRecord, check_comparable, load_records, records_frame, save_record
from mtl_helpers.jsonio import atomic_write_bytes
from conftest import sample_record as record


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "record.json"
    atomic_write_bytes(target, b'{"old": true}')

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b'{"new": ')
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_records_with_another_task_b_do_not_overwrite_each_other(tmp_path):
    save_record(record(tasks=("trec", "sst2"), acc=0.8), tmp_path)
    save_record(record(tasks=("trec", "rotten_tomatoes"), acc=0.7), tmp_path)
    save_record(record(tasks=("trec", "sst2"), seed=1, acc=0.6), tmp_path)
    assert len(load_records("cpu", root=tmp_path)) == 3
    assert [r.seed for r in load_records("cpu", tasks=["sst2", "trec"], root=tmp_path)] == [0, 1]
    with pytest.raises(MTLError, match="trained on different tasks"):
        records_frame(load_records("cpu", root=tmp_path))


def test_models_do_not_mix_in_one_table(tmp_path):
    save_record(record(model="a"), tmp_path)
    save_record(record(model="org/b"), tmp_path)
    with pytest.raises(MTLError, match="different models"):
        check_comparable(load_records("cpu", root=tmp_path))
    assert len(load_records("cpu", model="org/b", root=tmp_path)) == 1


def test_same_key_replaces_and_profiles_never_mix(tmp_path):
    save_record(record(acc=0.5), tmp_path)
    save_record(record(acc=0.8), tmp_path)
    save_record(record(profile="smoke"), tmp_path)
    (tmp_path / "cpu" / "old").mkdir()
    (tmp_path / "cpu" / "old" / "x.json").write_text(
        json.dumps({"scenario": "old", "profile": "cpu", "seed": 0, "model": "m", "tasks": {}, "schema": 1})
    )
    records = load_records("cpu", root=tmp_path)
    assert [(r.scenario, r.metric("trec")) for r in records] == [("head-only", 0.8)]


def test_nan_is_written_as_null_strict_json(tmp_path):
    path = save_record(record(acc=float("nan"), peak_memory_mb=float("inf")), tmp_path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    data = json.loads(text)
    assert data["metrics"]["validation"]["trec"]["accuracy"] is None and data["peak_memory_mb"] is None
    assert np.isnan(load_records("cpu", root=tmp_path)[0].metric("trec"))


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", "Upper", "x" * 200])
def test_a_scenario_name_cannot_write_outside_the_results_folder(name):
    with pytest.raises(MTLError, match="not allowed"):
        record(scenario=name)


def test_a_corrupt_record_is_named(tmp_path):
    path = save_record(record(), tmp_path)
    path.write_text('{"scenario": "head-only", "seed": ')
    with pytest.raises(MTLError, match=re.escape(path.name) + r" is corrupt.*re-run the notebook"):
        load_records("cpu", root=tmp_path)


def test_results_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_RESULTS_DIR", str(tmp_path))
    path = save_record(record(profile="smoke"))
    assert path == tmp_path / "smoke" / "head-only" / "sst2+trec--m-62c66a7a--seed0.json"  # slug, hash of the name


def test_records_are_ordinary_readable_files(tmp_path):
    path = save_record(record(), tmp_path)
    assert path.stat().st_mode & 0o044  # group/others may read, unlike mkstemp's 0600


def test_outcomes_round_trip(tmp_path):
    save_record(record(), tmp_path)
    loaded = load_records("cpu", root=tmp_path)[0]
    assert loaded.outcome_array("trec").tolist() == [1, 0, 1, 0]
    with pytest.raises(MTLError, match="holds no outcomes of 'trec' on 'test'"):
        loaded.outcome_array("trec", "test")


def test_the_index_lists_every_record(tmp_path):
    save_record(record(seed=0), tmp_path)
    save_record(record(seed=1, scenario="full-fine-tuning"), tmp_path)
    index = json.loads((tmp_path / "cpu" / "index.json").read_text())
    assert index["records"] == [
        "full-fine-tuning/sst2+trec--m-62c66a7a--seed1.json",
        "head-only/sst2+trec--m-62c66a7a--seed0.json",
    ]


def test_stored_records_are_fetched_from_the_repository_when_not_on_disk(tmp_path, monkeypatch):
    from mtl_helpers.fetch import stored_records

    published = tmp_path / "published"
    save_record(record(seed=0, acc=0.9), published)
    save_record(record(seed=1, acc=0.7), published)
    urls = []

    def fetch(url):
        urls.append(url)
        name = url.split("/results/cpu/")[1]
        return (published / "cpu" / name).read_bytes()

    monkeypatch.chdir(tmp_path)  # no _toc.yml above: not inside the book's repository
    records, where = stored_records("cpu", "https://github.com/owner/book", cache=tmp_path / "cache", fetch=fetch)
    assert (
        sorted(r.seed for r in records) == [0, 1]
        and "fetched from https://raw.githubusercontent.com/owner/book/main/results/cpu" in where
    )
    assert urls[0].endswith("/results/cpu/index.json")
    offline, why = stored_records(
        "cpu",
        "https://github.com/owner/book",
        cache=tmp_path / "empty",
        fetch=lambda url: (_ for _ in ()).throw(OSError("offline")),
    )
    assert offline == [] and "could not be read" in why


def test_inside_a_checkout_a_profile_without_stored_records_is_not_fetched(tmp_path, monkeypatch):
    from mtl_helpers.fetch import stored_records

    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    save_record(record(seed=0, acc=0.9), tmp_path / "results")  # results/cpu only
    monkeypatch.chdir(tmp_path)

    def fetch(url):
        raise AssertionError(f"fetched {url} from inside the checkout")

    gpu, why = stored_records("gpu", "https://github.com/owner/book", cache=tmp_path / "cache", fetch=fetch)
    assert gpu == [] and "stores none of this profile" in why and "Error" not in why
    cpu, _ = stored_records("cpu", "https://github.com/owner/book", cache=tmp_path / "cache", fetch=fetch)
    assert [r.seed for r in cpu] == [0]


def test_own_runs_replace_stored_ones_with_the_same_key(tmp_path, monkeypatch):
    from mtl_helpers import fetch as results  # collect_records and the stored_records it calls

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MTL_RESULTS_DIR", str(tmp_path / "mine"))
    save_record(record(seed=0, acc=0.1))
    stored = [record(seed=0, acc=0.9), record(seed=1, acc=0.8)]
    monkeypatch.setattr(results, "stored_records", lambda profile, url: (stored, "the stored ones"))
    combined, lines = results.collect_records("cpu", "https://github.com/owner/book")
    assert sorted((r.seed, r.metric("trec")) for r in combined) == [(0, 0.1), (1, 0.8)]
    assert "1 record(s) from your runs" in lines[0] and "1 record(s) from the stored ones" in lines[1]


def test_the_comparison_fetches_stored_records_from_the_setup_cells_url():
    """Chapter 10 falls back to the records stored in the book's repository; it must ask the URL
    that its Colab setup cell defines (rendered from _config.yml), so a fork edits one line."""
    from pathlib import Path

    import nbformat
    import yaml

    root = Path(__file__).resolve().parents[1]
    url = yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    nb = nbformat.read(root / "notebooks" / "10_comparison.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    defines = [i for i, src in enumerate(code) if f'REPO_URL = "{url}"' in src]
    uses = [i for i, src in enumerate(code) if "collect_records(" in src and "REPO_URL" in src]
    assert defines and uses and defines[0] < uses[0]


def test_a_stored_record_keeps_its_tasks_in_training_order(tmp_path):
    """The JSON file sorts its keys; read back, the tasks must come in the order they were trained (task A first),
    as in a fresh record, so that tables and figures do not depend on whether a run was reused."""
    fresh = record(tasks=("trec", "sst2"))
    save_record(fresh, tmp_path)
    [loaded] = load_records("cpu", root=tmp_path)
    assert list(loaded.tasks) == ["trec", "sst2"] == list(fresh.tasks)
    assert loaded.key == fresh.key and loaded.metrics == fresh.metrics


def test_a_record_written_without_task_order_still_reads(tmp_path):
    data = record(tasks=("trec", "sst2")).to_json()
    del data["task_order"]
    assert sorted(RunRecord.from_json(data).tasks) == ["sst2", "trec"]


def test_the_message_names_the_results_folder_relative_to_the_book(tmp_path, monkeypatch):
    """Chapter 10 prints where the reader's records are; a stored output must not carry a machine path."""
    from mtl_helpers import fetch as results  # collect_records and the stored_records it calls

    (tmp_path / "_toc.yml").write_text("root: intro\n")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.delenv("MTL_RESULTS_DIR", raising=False)
    monkeypatch.setattr(results, "stored_records", lambda profile, url: ([], "nowhere"))
    _, lines = results.collect_records("cpu", "https://github.com/owner/book")
    assert lines[0].endswith("from your runs in results/cpu") and str(tmp_path) not in " ".join(lines)
