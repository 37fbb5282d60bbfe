"""The benchmark suite's helpers: FLOP counts, targets, the timed loop and the rendered page.

No timing assertions: the quick suite runs on a tiny random model and only its shape is checked.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from bench import flops
from bench.report import evaluate_targets, markdown, render
from bench.run import SECTIONS, TARGETS, run_all

from conftest import MACHINE_PATH, data_dir

MINILM = BertConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=12)


def test_layer_flops_is_twice_the_weights_plus_attention():
    d, f, L = 384, 1536, 20
    weights = 4 * d * d + 2 * d * f
    assert flops.layer_forward_flops_per_token(d, f, L) == 2 * weights + 4 * L * d


def test_step_flops_backward_counts_only_trainable_layers():
    fwd = flops.forward_flops(MINILM, 32, 20)
    head = flops.step_flops(MINILM, 32, 20, 0, 2, backbone=False)
    assert flops.step_flops(MINILM, 32, 20, 6, 2) == pytest.approx(3 * fwd + head)
    assert flops.step_flops(MINILM, 32, 20, 0, 2) == pytest.approx(fwd + head)
    assert flops.step_flops(MINILM, 32, 20, 2, 2) == pytest.approx(fwd + 2 * fwd * 2 / 6 + head)
    assert head == 2 * 384 * 2 * 32 * 3


def test_step_flops_rejects_a_bad_layer_count():
    with pytest.raises(ValueError):
        flops.step_flops(MINILM, 32, 20, 7)


def test_matmul_reference_is_positive():
    out = flops.matmul_flops(sizes=(64,), reps=2, warmup=1)
    assert set(out) == {"fp32", "bf16"} and all(v["best"] > 0 for v in out.values())


def _fake_report(**over) -> dict:
    scen = lambda eps, sps, fps: {"examples_per_s": eps, "seconds_per_step": sps, "flops_per_s": fps, "epoch_seconds": 100 / eps,  # noqa: E731
                                  "trainable_params": 10, "peak_rss_mb": 1.0, "rss_growth_mb": 0.0, "mean_padded_len": 20.0}
    report = {
        "meta": {"batch_size": 32},
        "reference": {"fp32": {"best": 100e9, "by_size": {"1024": 100e9}}},
        "scenarios": {"full": scen(100, 0.3, 50e9), "top2": scen(250, 0.1, 40e9), "heads_recompute": scen(400, 0.08, 30e9),
                      "heads_cached": scen(40000, 0.001, 1e6)},
        "padding": {"dynamic": scen(100, 0.3, 50e9), "max_length": scen(20, 1.5, 60e9), "stats": {"dynamic": {"useful_fraction": 0.6}}},
        "hf_trainer": {"ours": {"examples_per_s": 100}, "hf": {"examples_per_s": 90}},
        "book": {"cpu": {"total_seconds": 1000}, "smoke": {"total_seconds": None}},
    }
    report.update(over)
    return report


def test_targets_pass_miss_and_not_measured():
    rows = {r["target"]: r for r in evaluate_targets(_fake_report())}
    status = [r["status"] for r in rows.values()]
    assert len(rows) == 7 and set(status) <= {"PASS", "MISS", "N/A"}
    by = lambda word: next(r for t, r in rows.items() if word in t)  # noqa: E731
    assert by("cached")["status"] == "PASS"  # 400 -> 40000 examples/s: 100x
    assert by("dynamic")["status"] == "PASS"
    assert by("top 2")["status"] == "PASS"
    assert by("Hugging Face")["status"] == "PASS"
    assert by("matmul")["status"] == "PASS" and by("matmul")["measured"].startswith("50.0%")
    assert by("cpu profile")["status"] == "PASS"
    assert by("smoke profile")["status"] == "N/A"
    slow = _fake_report(hf_trainer={"ours": {"examples_per_s": 50}, "hf": {"examples_per_s": 100}})
    miss = next(r for r in evaluate_targets(slow) if "Hugging Face" in r["target"])
    assert miss["status"] == "MISS" and miss["why"]


def _check_markdown(text: str, folder: Path, prefix: str) -> None:
    lines = text.splitlines()
    headings = [l for l in lines if l.startswith("#")]
    assert headings and all(re.match(r"^# \S", h) for h in headings), "top-level headings only (included with heading-offset 1)"
    assert "# Targets" in headings
    # tables: header, separator, rows with the same number of cells
    i = 0
    while i < len(lines):
        if lines[i].startswith("| "):
            n = lines[i].count(" | ") + 1
            assert re.fullmatch(r"\|(---\|)+", lines[i + 1]) and lines[i + 1].count("---") == n
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                assert len(re.split(r"(?<!\\)\|", lines[i])) - 2 == n, lines[i]
                i += 1
        i += 1
    assert text.count("```") % 2 == 0
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert path.startswith(prefix) and not Path(path).is_absolute()
        assert (folder / path[len(prefix):]).is_file()
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text).group(0)


def test_markdown_of_a_partial_report_is_well_formed(tmp_path):
    report = _fake_report()
    report["targets"] = evaluate_targets(report)
    text = markdown(report, [])
    _check_markdown(text, tmp_path, "_generated/")
    assert "MISS" not in text.split("# Machine")[0] or "PASS" in text


@pytest.fixture(scope="module")
def quick_report():
    data_dir()
    threads = torch.get_num_threads()
    try:
        yield run_all(quick=True, in_process=True, log=lambda *a: None)
    finally:
        torch.set_num_threads(threads)


def test_quick_suite_has_every_section(quick_report, tmp_path):
    assert set(SECTIONS) <= set(quick_report)
    assert {"full", "top2", "heads_recompute", "heads_cached"} <= set(quick_report["scenarios"])
    assert {"fp32", "bf16"} <= set(quick_report["bf16"]) and {"dynamic", "bucketed", "max_length", "stats"} <= set(quick_report["padding"])
    assert len(quick_report["targets"]) == len(TARGETS)
    assert quick_report["meta"]["mode"] == "quick"
    full = quick_report["scenarios"]["full"]
    assert full["trainable_layers"] == 6 and quick_report["scenarios"]["top2"]["trainable_layers"] == 2
    assert quick_report["scenarios"]["heads_cached"]["mean_padded_len"] == 0.0
    json.dumps(quick_report)  # JSON-ready
    md = tmp_path / "_generated" / "benchmarks.md"
    render(quick_report, md)
    _check_markdown(md.read_text(), md.parent, "_generated/")
    assert len(list(md.parent.glob("*.png"))) >= 1
