"""Result records: atomic writes, one file per scenario, no mixing of profiles."""
from __future__ import annotations

import json
import os

import pytest

from mtl_helpers import load_results, results_table, save_result
from mtl_helpers.results import atomic_write_bytes


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


def test_records_replace_older_runs_and_profiles_never_mix(tmp_path):
    record = {"scenario": "head-only", "metrics": {"trec": {"metric": "accuracy", "value": 0.5}}, "trainable_params": 10}
    save_result(record, "cpu", tmp_path)
    save_result({**record, "metrics": {"trec": {"metric": "accuracy", "value": 0.8}}}, "cpu", tmp_path)
    save_result({**record, "scenario": "smoke-only"}, "smoke", tmp_path)
    (tmp_path / "old-schema.json").write_text(json.dumps({"scenario": "old", "profile": "cpu"}))
    records = load_results("cpu", tmp_path)
    assert [r["scenario"] for r in records] == ["head-only"]
    table = results_table(records)
    assert table.loc["head-only", "trec accuracy"] == 0.8


def test_results_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_RESULTS_DIR", str(tmp_path))
    path = save_result({"scenario": "x"}, "smoke")
    assert path == tmp_path / "smoke" / "x.json"
    with pytest.raises(ValueError, match="scenario"):
        save_result({}, "smoke")


def test_records_are_ordinary_readable_files(tmp_path):
    path = save_result({"scenario": "x"}, "cpu", tmp_path)
    assert path.stat().st_mode & 0o044  # group/others may read, unlike mkstemp's 0600


def test_accuracy_margin_is_two_binomial_standard_errors():
    from mtl_helpers import accuracy_margin

    assert accuracy_margin(0.5, 100) == pytest.approx(0.1)  # 2 * sqrt(0.25 / 100)
    assert accuracy_margin([0.5, 0.5], [100, 100]) == pytest.approx(0.1 / 2**0.5)
    with pytest.raises(ValueError):
        accuracy_margin([0.5, 0.5], [100])
