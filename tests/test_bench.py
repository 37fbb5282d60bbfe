"""The benchmark suite's helpers: FLOP counts, targets, the timed loop and the rendered page.

No timing assertions: the quick suite runs on a tiny random model and only its shape is checked.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

import bench.run as bench_run
from bench import flops, machine
from bench.report import code_flags, evaluate_targets, machine_text, markdown, render
from bench.run import SECTIONS, TARGETS, main, run_all

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


def test_matmul_reference_is_positive(monkeypatch):
    monkeypatch.setattr(flops, "cpu_has_native_bf16", lambda: True)  # n = 64: quick even where bf16 is emulated
    out = flops.matmul_flops(sizes=(64,), reps=2, warmup=1)
    assert {"fp32", "bf16"} <= set(out) and all(out[d]["best"] > 0 for d in ("fp32", "bf16"))
    assert out["device"] == "cpu" and out["fp32_matmul_precision"] in ("highest", "high", "medium")
    assert "skipped" not in out


def test_matmul_reference_skips_bf16_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(flops, "cpu_has_native_bf16", lambda: False)
    out = flops.matmul_flops(sizes=(64,), reps=2, warmup=1)
    assert out["fp32"]["best"] > 0 and "bf16" not in out and "native bf16" in out["skipped"]["bf16"]
    assert "bf16" not in flops.matmul_flops(sizes=(64,), dtypes=("fp32",), reps=2, warmup=1)


EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n"
HASWELL = "model name\t: Intel(R) Xeon(R) CPU E5-2680 v3\nflags\t\t: fpu sse2 avx avx2 fma\n"


def test_machine_description_names_the_cpu_and_the_flags_that_matter():
    epyc, haswell, none = (machine.machine_description(t) for t in (EPYC, HASWELL, ""))
    assert epyc["cpu_model"] == "AMD EPYC 9R14" and epyc["native_bf16"] is True
    assert epyc["cpu_flags"] == {"avx2": True, "avx512f": True, "avx512_bf16": True, "amx_bf16": False}
    assert haswell["native_bf16"] is False and haswell["cpu_flags"]["avx2"] is True
    assert none["native_bf16"] is None and set(none["cpu_flags"].values()) == {None}  # no /proc/cpuinfo
    assert {"logical_cpus", "torch", "date_utc"} <= set(epyc)
    assert epyc["torch"].split("+")[0] == torch.__version__.split("+")[0]
    text = machine_text({**epyc, "date_utc": "2026-01-02 03:04"})
    assert "AMD EPYC 9R14" in text and "`avx512_bf16` yes" in text and "`amx_bf16` no" in text
    assert "native bf16" in text and "2026-01-02 03:04 UTC" in text and "logical CPUs" in text
    assert "`avx2` yes" in machine_text(haswell) and "no native bf16" in machine_text(haswell)
    assert "CPU flags not recorded" in machine_text({"cpu_model": "Old CPU", "date_utc": "2025-01-01 00:00"})


# The CPU plan's bound, in full fine-tuning examples of MiniLM (the cost model's unit): a fixed number, so a
# change that makes `make bench` longer has to change this test too. No timing is measured here.
WORK_BUDGET = 15_000
MAX_PROCESSES = 22


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-native-bf16"])
def test_the_cpu_plan_is_bounded(monkeypatch, native):
    monkeypatch.setattr(flops, "cpu_has_native_bf16", lambda: native)
    work = bench_run.planned_work(quick=False)
    assert work["work"] <= WORK_BUDGET and work["processes"] <= MAX_PROCESSES
    assert work["estimated_seconds"] <= bench_run.PLANNED_SECONDS < bench_run.BUDGET_SECONDS == 900
    sections = work["sections"]
    assert set(sections) == {
        "reference",
        "scenarios",
        "sweep",
        "inference",
        "padding",
        "hf_trainer",
        "profile",
        "gpu",
    } | ({"bf16"} if native else set())
    for name, cost in sections.items():
        assert cost["estimated_seconds"] > 0 and cost["timed"], name
        assert name == "reference" or cost["steps"] + cost["rows"] > 0, name
    # every timed training scenario keeps a meaningful measurement: warm-up, then >= 3 repetitions of >= 4 steps
    p = bench_run.plan(quick=False)
    for spec in [*bench_run.cpu_specs(p)["scenarios"].values(), *bench_run.cpu_specs(p)["bf16"].values()]:
        assert spec["warmup"] >= 2 and spec["reps"] >= 3 and (spec["steps"] == "epoch" or spec["steps"] >= 4)
    # no whole epochs of real training on the CPU: only the cached-feature steps (the heads alone) run epochs
    epochs = [s for section in bench_run.cpu_specs(p).values() for s in section.values() if s.get("steps") == "epoch"]
    assert [s["trainable"] for s in epochs] == ["cached"]
    assert bench_run.gpu_plan(False, "cpu")["n_train"] <= 256
    assert work["work"] < bench_run.planned_work(quick=False, gpu=False)["work"] + 3000  # the GPU stand-in is small


def test_bf16_is_planned_only_where_the_cpu_has_it_natively(monkeypatch):
    def specs(quick=False, bf16=True):
        return bench_run.cpu_specs(bench_run.plan(quick, bf16))

    monkeypatch.setattr(flops, "cpu_has_native_bf16", lambda: False)
    p = bench_run.plan(quick=False)
    assert p["bf16"]["skipped"] == bench_run.NO_NATIVE_BF16 and "native bf16" in p["bf16"]["skipped"]
    s = specs()
    assert s["bf16"] == {} and s["reference"]["matmul"]["dtypes"] == ["fp32"]
    assert s["inference"]["inference"]["precisions"] == ["fp32"]
    assert "bf16" not in bench_run.planned_work(quick=False)["sections"]
    assert bench_run.gpu_plan(False, "cpu")["precisions"] == ["fp32"]
    assert specs(quick=True)["bf16"], "--quick runs the bf16 code paths on a tiny model regardless"

    monkeypatch.setattr(flops, "cpu_has_native_bf16", lambda: True)
    s = specs()
    assert s["bf16"]["bf16"]["kind"] == "bf16" and s["reference"]["matmul"]["dtypes"] == ["fp32", "bf16"]
    assert s["inference"]["inference"]["precisions"] == ["fp32", "bf16"]
    assert bench_run.plan(quick=False)["bf16"]["skipped"] is None
    assert "bf16" in bench_run.planned_work(quick=False)["sections"]
    # the CPU stand-in of the GPU section stays fp32 (bf16 on a CPU is the bf16 section); CUDA runs both
    assert bench_run.gpu_plan(False, "cpu")["precisions"] == ["fp32"]
    assert bench_run.gpu_plan(False, "cuda")["precisions"] == ["fp32", "bf16"]
    # --no-bf16 leaves it out everywhere, quick included
    for quick in (False, True):
        assert specs(quick, bf16=False)["bf16"] == {} and "--no-bf16" in bench_run.plan(quick, False)["bf16"]["skipped"]
        assert bench_run.gpu_plan(quick, "cpu", bf16=False)["precisions"] == ["fp32"]


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-native-bf16"])
def test_the_cpu_suite_runs_the_specs_it_plans_and_times_each_section(monkeypatch, tmp_path, native):
    """run_cpu_suite with a fake worker: it runs exactly the planned specs, records each section's wall
    time, and says why bf16 was left out."""
    monkeypatch.setattr(flops, "cpu_has_native_bf16", lambda: native)
    ran = []

    def fake_run_spec(spec, in_process, log=print):
        ran.append(spec)
        if spec["kind"] == "sweep":
            return {"by_k": {str(k): {"k": k} for k in spec["ks"]}}
        return {"kind": spec["kind"]}

    monkeypatch.setattr(bench_run, "run_spec", fake_run_spec)
    monkeypatch.setattr(bench_run, "ROOT", tmp_path)  # no results/: the book reads "not measured"
    report = bench_run.run_cpu_suite(False, False, None, False, False, log=lambda *a: None)
    planned = [s for section in bench_run.cpu_specs(bench_run.plan(False)).values() for s in section.values()]
    assert ran == planned
    assert list(report["meta"]["section_seconds"]) == [
        "reference",
        "scenarios",
        "sweep",
        "inference",
        "padding",
        "bf16",
        "hf_trainer",
        "profile",
        "book",
    ]
    assert sorted(report["sweep"], key=int) == list(report["sweep"]) == ["0", "2", "4", "6"]
    assert (
        report["sweep"]["2"] is report["scenarios"]["top2"]
        and report["padding"]["bucketed"] is report["scenarios"]["full"]
    )
    meta = report["meta"]
    assert {"cpu_model", "cpu_flags", "logical_cpus", "torch", "date_utc"} <= set(meta)
    if native:
        assert report["bf16"] == {"kind": "bf16"} and meta["bf16_skipped"] is None
    else:
        assert report["bf16"] == {"skipped": bench_run.NO_NATIVE_BF16} == {"skipped": meta["bf16_skipped"]}
        assert report["inference"]["bf16_skipped"] == bench_run.NO_NATIVE_BF16


def test_run_notebooks_records_the_machine_beside_the_times():
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_notebooks", BENCH.parent / "scripts" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    record = module.times_record("cpu", {"01_model_tour.ipynb": 12.0, "total": 12.0})
    assert record["profile"] == "cpu" and record["seconds"]["total"] == 12.0
    assert {"cpu_model", "cpu_flags", "logical_cpus", "torch", "date_utc"} <= set(record["machine"])
    json.dumps(record)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_matmul_reference_on_cuda():
    out = flops.matmul_flops(sizes=(256,), reps=3, warmup=1, device="cuda")
    assert out["device"] == "cuda" and all(out[d]["best"] > 0 for d in ("fp32", "bf16"))


BENCH = Path(__file__).resolve().parents[1] / "bench"


def private_uses(source: str) -> list[str]:
    """Underscore names a benchmark file reaches into: `x._name` on anything but its own `self`/`cls`,
    and `_name` imported from mtl_helpers (dunders such as __doc__ are public)."""
    found = []

    def private(name):
        return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mtl_helpers":
            found += [f"line {node.lineno}: {node.module}.{a.name}" for a in node.names if private(a.name)]
            found += [f"line {node.lineno}: {node.module}" for part in node.module.split(".") if private(part)]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "mtl_helpers" and any(private(p) for p in a.name.split("."))
            ]
    return found


def test_the_benchmark_uses_only_public_names():
    files = sorted(BENCH.glob("*.py"))
    assert {"run.py", "worker.py", "report.py", "flops.py"} <= {f.name for f in files}
    problems = {f.name: private_uses(f.read_text()) for f in files}
    assert not any(problems.values()), problems


def test_the_private_name_check_catches_what_it_should():
    assert private_uses("trainer._step(task, batch)") == ["line 1: ._step"]
    assert private_uses("from mtl_helpers.train import _to, Trainer")
    assert private_uses("import mtl_helpers._secret")
    assert private_uses("x = trainer.data._rows")
    assert not private_uses("self._cache = 1\nfrom .flops import __doc__ as f\ntrainer.data.rows('a', 'train')")


def _fake_report(**over) -> dict:
    def scen(eps, sps, fps):
        return {
            "examples_per_s": eps,
            "seconds_per_step": sps,
            "flops_per_s": fps,
            "epoch_seconds": 100 / eps,
            "trainable_params": 10,
            "peak_rss_mb": 1.0,
            "rss_growth_mb": 0.0,
            "mean_padded_len": 20.0,
        }

    report = {
        "meta": {"batch_size": 32},
        "reference": {"fp32": {"best": 100e9, "by_size": {"1024": 100e9}}},
        "scenarios": {
            "full": scen(100, 0.3, 50e9),
            "top2": scen(250, 0.1, 40e9),
            "heads_recompute": scen(400, 0.08, 30e9),
            "heads_cached": scen(40000, 0.001, 1e6),
        },
        "padding": {
            "dynamic": scen(100, 0.3, 50e9),
            "max_length": scen(20, 1.5, 60e9),
            "stats": {"dynamic": {"useful_fraction": 0.6}},
        },
        "hf_trainer": {"ours": {"examples_per_s": 100}, "hf": {"examples_per_s": 90}},
        "book": {
            "cpu": {
                "total_seconds": 1000,
                "per_notebook": {"01_model_tour.ipynb": 100.0, "04_one_head_frozen.ipynb": 900.0},
                "source": "results/cpu/notebook_times.json",
            },
            "smoke": {"total_seconds": None},
        },
        "gpu": fake_gpu("cpu"),
    }
    report.update(over)
    return report


def fake_gpu(device: str, ours=(1000, 1800, 4000, 7000), hf=(700, 1200, 3000, 5000), mfu=0.2) -> dict:
    """A GPU section: rows (batch 32, 256) x (fp32, bf16); examples/s of ours and of Hugging Face."""
    rows, i = [], 0
    for bs in (32, 256):
        for precision in ("fp32", "bf16"):
            o = {
                "examples_per_s": ours[i],
                "mean_padded_len": 30.0,
                "flops_per_s": 1e12,
                "epoch_seconds": 1.0,
                "peak_memory_mb": 900.0,
            }
            h = {"examples_per_s": hf[i], "mean_padded_len": 30.0, "epoch_seconds": 1.2}
            rows.append({"batch_size": bs, "precision": precision, "ours": o, "hf": h, "ratio": ours[i] / hf[i]})
            i += 1
    return {
        "meta": {
            "device_type": device,
            "device_name": "NVIDIA H100 80GB HBM3" if device == "cuda" else "Some CPU (CPU, 2 torch threads)",
            "batch_sizes": [32, 256],
            "n_train": 16000,
            "model": "minilm",
            "warmup_steps": 5,
            "mode": "full",
            "options": {"sync_every": 50, "tf32": device == "cuda", "compile": False, "bucket": True},
        },
        "rows": rows,
        "reference": {"bf16": {"best": 5e14}, "fp32": {"best": 2e14}},
        "mfu": {
            "batch_size": 256,
            "precision": "bf16",
            "flops_per_s": mfu * 5e14,
            "matmul_bf16_best": 5e14,
            "fraction": mfu,
        },
        "ablations": [
            {
                "option": "sync_every",
                "change": "sync_every=1",
                "precision": "bf16",
                "batch_size": 256,
                "examples_per_s": 5000,
                "baseline_examples_per_s": 7000,
                "speedup_of_option": 1.4,
            }
        ],
        "profile": {
            "batch_size": 256,
            "precision": "bf16",
            "phase_seconds": {"data": 0.002, "forward": 0.01},
            "device_phase_seconds": {"data": 0.0001, "forward": 0.009},
            "host_step_seconds": 0.012,
            "device_step_seconds": 0.0091,
            "device_busy_fraction": 0.55,
            "top_ops": [{"op": "aten::mm", "self_ms_per_step": 3.0, "share": 0.3, "calls_per_step": 40}],
            "top_kernels": [
                {
                    "kernel": "void "
                    "cutlass::Kernel2<cutlass_80_tensorop_bf16_s16816gemm_relu_bf16_64x64_32x6_tn_align8>(T1::Params)",
                    "self_ms_per_step": 2.0,
                    "share": 0.2,
                    "calls_per_step": 12,
                }
            ],
        },
        "why": {"sync_every": "fewer host reads (--device cuda)"},
    }


def test_targets_pass_miss_and_not_measured():
    rows = {r["target"]: r for r in evaluate_targets(_fake_report())}
    status = [r["status"] for r in rows.values()]
    assert len(rows) == len(TARGETS) == 10 and set(status) <= {"PASS", "MISS", "N/A"}

    def by(word):
        return next(r for t, r in rows.items() if word in t)

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
    assert by("cpu profile")["threshold"] == "<= 60 min"


def test_gpu_targets_are_not_applicable_without_a_gpu():
    gpu = [r for r in evaluate_targets(_fake_report()) if r["target"].startswith("GPU")]
    assert len(gpu) == 3 and all(r["status"] == "N/A" and r["why"].startswith("no GPU in this run") for r in gpu)
    assert all(r["status"] == "N/A" for r in evaluate_targets(_fake_report(gpu=None)) if r["target"].startswith("GPU"))


def test_gpu_targets_on_a_gpu_pass_or_say_by_how_much_and_why():
    rows = {r["target"]: r for r in evaluate_targets(_fake_report(gpu=fake_gpu("cuda")))}

    def by(word):
        return next(r for t, r in rows.items() if t.startswith("GPU") and word in t)

    assert by("bf16 vs fp32")["status"] == "PASS"  # 7000 / 4000 = 1.75x
    assert by("Hugging Face")["status"] == "PASS"  # lowest 1.33x
    assert by("matmul")["status"] == "PASS" and by("matmul")["measured"].startswith("20.0%")
    slow = fake_gpu("cuda", ours=(1000, 1800, 4000, 5000), hf=(700, 1700, 3000, 4500), mfu=0.04)
    rows = {r["target"]: r for r in evaluate_targets(_fake_report(gpu=slow))}
    assert (
        by("bf16 vs fp32")["status"] == "MISS"
        and "1.25x" in by("bf16 vs fp32")["why"]
        and "0.25x short" in by("bf16 vs fp32")["why"]
    )
    hf = by("Hugging Face")
    assert hf["status"] == "MISS" and "batch 32 bf16: 1.06x (0.14x short)" in hf["why"] and "host-bound" in hf["why"]
    assert "batch 32 fp32" not in hf["why"]  # 1.43x: not short
    assert (
        by("matmul")["status"] == "MISS"
        and "6.0 percentage points short" in by("matmul")["why"]
        and "busy 55%" in by("matmul")["why"]
    )


def _check_markdown(text: str, folder: Path, prefix: str) -> None:
    lines = text.splitlines()
    headings = [entry for entry in lines if entry.startswith("#")]
    assert headings and all(re.match(r"^# \S", h) for h in headings), (
        "top-level headings only (included with heading-offset 1)"
    )
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
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))
    assert not re.search(r"(?<![\w-])--[a-z]", prose), "command-line flags are written as code: " + str(
        re.findall(r".{30}--[a-z].{10}", prose)[:3]
    )
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert path.startswith(prefix) and not Path(path).is_absolute()
        assert (folder / path[len(prefix) :]).is_file()
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text).group(0)


def test_markdown_of_a_partial_report_is_well_formed(tmp_path):
    report = _fake_report()
    report["targets"] = evaluate_targets(report)
    text = markdown(report, [])
    _check_markdown(text, tmp_path, "_generated/")
    assert "MISS" not in text.split("# Machine")[0] or "PASS" in text
    assert "Device: Some CPU (CPU, 2 torch threads)" in text and "GPU figures pending" in text


def test_markdown_dates_the_cpu_figures_with_the_machine(tmp_path):
    report = _fake_report()
    report["meta"].update(
        cpu_model="AMD EPYC 9R14",
        cpu_flags={"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_bf16": False},
        logical_cpus=2,
        torch="2.13.0+cpu",
        date_utc="2026-02-03 04:05",
        bf16_skipped=bench_run.NO_NATIVE_BF16,
    )
    report["bf16"] = {"skipped": bench_run.NO_NATIVE_BF16}
    report["reference"]["skipped"] = {"bf16": "this CPU has no native bf16 (AVX512-BF16 or AMX)"}
    report["gpu"]["meta"]["bf16_skipped"] = "left out by --no-bf16"  # a flag in a reason: set as code
    report["targets"] = evaluate_targets(report)
    text = markdown(report, [])
    _check_markdown(text, tmp_path, "_generated/")
    first = text.split("\n\n")[0]
    assert first.startswith("**CPU figures measured on AMD EPYC 9R14 (2 logical CPUs;")
    for part in ("`avx2` yes", "`avx512_bf16` no", "`amx_bf16` no", "torch 2.13.0+cpu", "2026-02-03 04:05 UTC"):
        assert part in first, part
    assert "# bf16 autocast\n\nNot measured: this CPU has no native bf16" in text
    assert "bf16 not measured: this CPU has no native bf16 (AVX512-BF16 or AMX)." in text
    old = markdown({**_fake_report(), "targets": []}, [])  # a report from before the flags were recorded
    assert "CPU flags not recorded" in old.split("\n\n")[0]


def test_markdown_shows_where_the_books_minutes_go(tmp_path):
    report = _fake_report()
    report["targets"] = evaluate_targets(report)
    text = markdown(report, [])
    _check_markdown(text, tmp_path, "_generated/")
    section = text.split("# Where the book's minutes go")[1].split("\n# ")[0]
    assert "machine not recorded" in section  # the times file holds no machine
    assert "| 4 | `04_one_head_frozen.ipynb` | 15.0 | 90% |" in section and "|  | total | 16.7 | 100% |  |" in section
    report["book"]["cpu"]["machine"] = {
        "cpu_model": "Intel(R) Xeon(R) Processor",
        "cpu_flags": {"avx2": True, "avx512_bf16": True, "amx_bf16": True},
        "logical_cpus": 2,
        "torch": "2.13.0",
        "date_utc": "2026-03-04 05:06",
    }
    section = markdown(report, []).split("# Where the book's minutes go")[1].split("\n# ")[0]
    assert "machine not recorded" not in section and "measured on Intel(R) Xeon(R) Processor" in section
    assert "`amx_bf16` yes" in section and "2026-03-04 05:06 UTC" in section
    del report["book"]["cpu"]["per_notebook"]
    assert "No per-chapter times" in markdown(report, [])
    figs = bench_report_figures(report | {"book": _fake_report()["book"]}, tmp_path)
    assert "bench_book_minutes.png" in [name for name, _ in figs]


def bench_report_figures(report, folder):
    from bench.report import figures

    return figures(report, folder)


def test_markdown_shows_each_sections_wall_time_against_the_plan(tmp_path):
    report = _fake_report()
    work = bench_run.planned_work(quick=False)
    report["meta"].update(
        plan=work,
        budget_seconds=900.0,
        run_seconds=500.0,
        section_seconds={name: 10.0 for name in work["sections"]},
    )
    report["targets"] = evaluate_targets(report)
    text = markdown(report, [])
    _check_markdown(text, tmp_path, "_generated/")
    section = text.split("# How long the suite took")[1].split("\n# ")[0]
    assert "8.3 min, within its budget of 15 min" in section
    assert "| scenarios | 2 warm-up + 3 x 5 steps, batch 32;" in section
    lines = bench_run.budget_lines(report)
    assert lines[-1].strip().startswith("total") and "within the budget of 900 s" in lines[-1]
    assert "(estimated" in lines[0]
    assert "# How long the suite took" not in markdown(_fake_report(), [])  # older reports: no section times


def test_markdown_names_the_gpu_and_sets_the_gpu_table_beside_the_cpu_one(tmp_path):
    report = _fake_report(gpu=fake_gpu("cuda"))
    report["meta"].update(cpu_model="Some CPU", torch_threads=2)
    report["targets"] = evaluate_targets(report)
    text = markdown(report, [])
    _check_markdown(text, tmp_path, "_generated/")
    headings = [entry for entry in text.splitlines() if entry.startswith("# ")]
    cpu = headings.index("# Against Hugging Face Trainer on the CPU")
    assert headings[cpu + 1] == "# On the GPU: this package against Hugging Face Trainer"
    assert "Device: NVIDIA H100 80GB HBM3" in text and "Device: Some CPU (CPU, 2 torch threads)" in text
    assert "GPU figures pending" not in text and "| 256 | bf16 | 7,000 | 5,000 | 1.40x |" in text
    assert ". .devpack/setup.sh && python -m bench.run --device cuda" in text


def test_flags_become_code():
    assert code_flags("run by this suite (--with-book)") == "run by this suite (`--with-book`)"
    assert code_flags("`--quick` and --device cuda") == "`--quick` and `--device` cuda"


@pytest.fixture(scope="module")
def quick_report():
    data_dir()
    threads = torch.get_num_threads()
    earlier = {"meta": {"mode": "full"}, "scenarios": {}, "gpu": fake_gpu("cuda")}  # a quick run keeps nothing from it
    try:
        yield run_all(quick=True, in_process=True, device="cpu", previous=earlier, log=lambda *a: None)
    finally:
        torch.set_num_threads(threads)


def test_quick_suite_has_every_section(quick_report, tmp_path):
    assert set(SECTIONS) <= set(quick_report)
    assert {"full", "top2", "heads_recompute", "heads_cached"} <= set(quick_report["scenarios"])
    assert {"fp32", "bf16"} <= set(quick_report["bf16"]) and {"dynamic", "bucketed", "max_length", "stats"} <= set(
        quick_report["padding"]
    )
    meta = quick_report["meta"]
    assert set(meta["section_seconds"]) == {*bench_run.CPU_SECTIONS} - {"meta"} | {"gpu"}
    assert "plan" not in meta and meta["budget_seconds"] == 900.0  # the cost model is for the full plan
    assert {"cpu_model", "cpu_flags", "logical_cpus", "torch", "date_utc"} <= set(meta)
    assert sorted(quick_report["sweep"], key=int) == ["0", "2", "4", "6"]
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


def test_quick_gpu_section_runs_the_gpu_path_on_the_cpu(quick_report):
    gpu = quick_report["gpu"]
    assert (
        gpu["meta"]["device_type"] == "cpu" and "CPU" in gpu["meta"]["device_name"] and not gpu["meta"].get("carried")
    )
    assert [(r["batch_size"], r["precision"]) for r in gpu["rows"]] == [
        (8, "fp32"),
        (8, "bf16"),
        (32, "fp32"),
        (32, "bf16"),
    ]
    for row in gpu["rows"]:
        ours = row["ours"]
        assert (
            ours["examples_per_s"] > 0
            and ours["sync_every"] == 50
            and ours["bucket_by_length"]
            and ours["pin_memory"] is False
        )
        assert ours["steps"] == -(-96 // row["batch_size"]) and ours["fused_adamw"]
        if row["hf"] is not None:  # transformers.Trainer needs accelerate
            assert (
                row["hf"]["steps"] == ours["steps"] and row["ratio"] > 0 and row["hf"]["sampling"] == "length-grouped"
            )
    assert {a["option"] for a in gpu["ablations"]} == {"sync_every", "bucket_by_length"}
    if flops.cpu_has_native_bf16():  # elsewhere the matmul reference leaves bf16 out
        assert gpu["mfu"]["fraction"] > 0 and gpu["reference"]["bf16"]["best"] > 0
    assert set(gpu["eval_batches"]) >= {"16", "64"} and gpu["profile"]["phase_seconds"]["forward"] > 0
    assert set(gpu["why"]) >= {"sync_every", "pin_memory", "tf32", "compile", "bucket_by_length", "fused_adamw"}
    gpu_rows = [t for t in quick_report["targets"] if t["target"].startswith("GPU")]
    assert len(gpu_rows) == 3 and all(t["status"] == "N/A" and "no GPU in this run" in t["why"] for t in gpu_rows)


def test_render_only_rewrites_the_page_from_a_report(quick_report, tmp_path):
    source, out, md = tmp_path / "in.json", tmp_path / "out.json", tmp_path / "_generated" / "benchmarks.md"
    source.write_text(json.dumps(quick_report))
    assert main(["--render-only", str(source), "--out", str(out), "--md", str(md)]) == 0
    assert json.loads(out.read_text())["gpu"]["rows"] == quick_report["gpu"]["rows"]
    _check_markdown(md.read_text(), md.parent, "_generated/")


def test_the_committed_page_is_well_formed_and_matches_the_targets():
    """The book's appendix page as committed: tables, figures, no machine paths, flags as code; its
    targets are the ones the code evaluates from the committed report."""
    root = BENCH.parent
    page = root / "book" / "_generated" / "benchmarks.md"
    text = page.read_text()
    _check_markdown(text, page.parent, "_generated/")
    report = json.loads((root / "bench" / "report.json").read_text())
    assert report["targets"] == evaluate_targets(report), (
        "re-render: python -m bench.run --render-only bench/report.json"
    )
    assert not MACHINE_PATH.search(json.dumps(report))
    for row in report["targets"]:
        assert f"| {row['target']} | {row['threshold']} |" in text
    assert "# Running the GPU benchmark" in text and "# On the GPU: this package against Hugging Face Trainer" in text


def test_a_run_on_one_device_keeps_what_the_report_measured_on_the_other(monkeypatch):
    import bench.run as run

    calls: list[str] = []

    def cpu_suite(*args, **kwargs):
        calls.append("cpu")
        return {"meta": {"mode": "full"}, "scenarios": {"new": 1}}

    def gpu_section(quick, device, *args, **kwargs):
        calls.append(f"gpu:{device}")
        return {"meta": {"device_type": device}}

    monkeypatch.setattr(run, "run_cpu_suite", cpu_suite)
    monkeypatch.setattr(run, "run_gpu_section", gpu_section)
    monkeypatch.setattr(run, "resolve_device", lambda name: name)

    def quiet(*a):
        return None

    cpu_report = {
        "meta": {"mode": "full"},
        "scenarios": {"old": 1},
        "reference": {},
        "gpu": {"meta": {"device_type": "cpu"}},
    }
    gpu_report = {**cpu_report, "gpu": {"meta": {"device_type": "cuda"}, "rows": []}}

    report = run.run_all(device="cuda", previous=cpu_report, log=quiet)
    assert calls == ["gpu:cuda"] and report["scenarios"] == {"old": 1} and "--device cuda" in report["meta"]["carried"]
    calls.clear()
    report = run.run_all(device="cuda", previous=cpu_report, cpu_suite=True, log=quiet)
    assert calls == ["cpu", "gpu:cuda"] and report["scenarios"] == {"new": 1}
    calls.clear()
    report = run.run_all(device="cuda", previous={**cpu_report, "meta": {"mode": "quick"}}, log=quiet)
    assert calls == ["cpu", "gpu:cuda"]  # a quick report's CPU sections are not kept
    calls.clear()
    report = run.run_all(device="cpu", previous=gpu_report, log=quiet)
    assert calls == ["cpu"] and report["gpu"]["meta"]["device_type"] == "cuda" and report["gpu"]["meta"]["carried"]
    calls.clear()
    run.run_all(device="cpu", previous=gpu_report, fresh=True, log=quiet)
    run.run_all(device="cpu", previous=cpu_report, log=quiet)  # a CPU stand-in is measured again, not kept
    assert calls == ["cpu", "gpu:cpu", "cpu", "gpu:cpu"]


def test_markdown_shows_the_layer_cache_speed_up_against_k(tmp_path):
    report = _fake_report()
    report["targets"] = evaluate_targets(report)
    assert "# Caching the frozen layers" not in markdown(report, [])  # not measured: no section
    report["layer_cache"] = {
        "meta": {"rows": 256, "batch_size": 16, "steps": 8, "precision": "bf16", "cpu_model": "Some CPU"},
        "rows": [
            {"k": 1, "level": 6, "uncached_s_per_step": 0.2, "cached_s_per_step": 0.05, "build_s": 3.0, "speedup": 4.0},
            {"k": 6, "level": 0, "uncached_s_per_step": 0.2, "cached_s_per_step": 0.2, "build_s": 0.0, "speedup": 1.0},
        ],
    }
    text = markdown(report, [])
    _check_markdown(text, tmp_path, "_generated/")
    section = text.split("# Caching the frozen layers")[1].split("\n# ")[0]
    assert "| 1 | 6 | 0.200 | 0.050 | 4.00x | 3.00 |" in section and "bf16, measured on Some CPU" in section
    assert "the numbers mean nothing" not in section
