"""Benchmark suite of the book: throughput, model FLOP/s, memory, padding, bf16, HF Trainer, book time.

    python -m bench.run [--quick] [--out bench/report.json] [--md book/_generated/benchmarks.md] [--with-book]

Each full-mode scenario runs in a fresh subprocess (clean allocator, so its peak RSS is its own);
--quick runs tiny settings in this process (under 2 minutes; numbers are not meaningful).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "report.json"
DEFAULT_MD = ROOT / "book" / "_generated" / "benchmarks.md"
SECTIONS = ("meta", "reference", "scenarios", "sweep", "inference", "padding", "bf16", "hf_trainer", "book", "profile", "targets", "formula")

TARGETS = {
    "cached_vs_recompute": 50.0,
    "dynamic_vs_max_length": 2.0,
    "top2_vs_full": 2.0,
    "full_vs_hf": 1.0,
    "full_mfu": 0.40,
    "book_cpu_seconds": 1800.0,
    "book_smoke_seconds": 300.0,
}


def plan(quick: bool) -> dict:
    """Scenario specs: full mode uses all-MiniLM-L6-v2 on the cpu profile's data sizes."""
    if quick:
        base = {"model": "tiny", "hidden": 32, "layers": 6, "tasks": ["trec", "sst2"], "max_train": 96, "max_eval": 48,
                "batch_size": 16, "eval_batch_size": 64, "warmup": 1, "reps": 2, "steps": 2}
        return {
            "base": base, "matmul": {"sizes": [256, 512], "reps": 3}, "ks": [0, 2, 6], "slow": {"warmup": 1, "reps": 2, "steps": 1},
            "cached": {"warmup": 2, "reps": 2, "steps": "epoch"}, "bf16": {"warmup": 1, "reps": 2, "steps": 3},
            "inference": {"rows": 48, "reps": 2}, "hf": {"tasks": ["sst2"]}, "profile": {"warmup": 1, "steps": 2, "profile_steps": 1},
            "sweep": {"warmup": 1, "reps": 2, "steps": 1},
        }
    base = {"model": "minilm", "tasks": ["trec", "sst2"], "max_train": 2000, "max_eval": 500,
            "batch_size": 32, "eval_batch_size": 128, "warmup": 3, "reps": 5, "steps": 5}
    return {
        "base": base, "matmul": {"sizes": [1024, 2048], "reps": 7}, "ks": [0, 2, 4, 6], "slow": {"warmup": 1, "reps": 3, "steps": 2},
        "cached": {"warmup": 10, "reps": 5, "steps": "epoch"}, "bf16": {"warmup": 3, "reps": 5, "steps": 8},
        "inference": {"rows": 500, "reps": 3}, "hf": {"tasks": ["sst2"]}, "profile": {"warmup": 2, "steps": 8, "profile_steps": 3},
        "sweep": {"warmup": 2, "reps": 3, "steps": 4},
    }


def run_spec(spec: dict, in_process: bool, log=print) -> dict:
    """A scenario in a fresh `python -m bench.worker` process (or here, for --quick)."""
    started = time.perf_counter()
    if in_process:
        from . import worker

        result = worker.run(spec)
        result["memory_method"] = "in-process (not isolated)"
    else:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([sys.executable, "-m", "bench.worker", json.dumps(spec)], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines()[::-1] if l.startswith("BENCH_RESULT ")), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"scenario {spec.get('kind')} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(line[len("BENCH_RESULT "):])
        result["memory_method"] = "fresh subprocess, peak RSS (ru_maxrss)"
    log(f"  {spec['kind']} {spec.get('label', '')}: {time.perf_counter() - started:.1f} s")
    return result


def machine_meta(threads: int | None) -> dict:
    import torch
    import transformers

    cpu = "unknown"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "cpu_model": cpu, "logical_cpus": os.cpu_count(), "torch_threads": threads or torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def book_times(results_root: Path, with_book: bool, log=print) -> dict:
    """Wall times of executing the book per profile, from scripts/run_notebooks.py --times files."""
    out = {}
    for profile in ("cpu", "smoke"):
        path = results_root / profile / "notebook_times.json"
        if path.exists():
            data = json.loads(path.read_text())
            out[profile] = {"total_seconds": data["seconds"]["total"], "per_notebook": {k: v for k, v in data["seconds"].items() if k != "total"},
                            "source": f"results/{profile}/notebook_times.json"}
        else:
            out[profile] = {"total_seconds": None, "source": "not measured",
                            "how": f"python scripts/run_notebooks.py --profile {profile} --times results/{profile}/notebook_times.json"}
    if with_book:
        with tempfile.TemporaryDirectory() as tmp:
            times = Path(tmp) / "times.json"
            env = {**os.environ, "MTL_RESULTS_DIR": str(Path(tmp) / "results")}
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "scripts/run_notebooks.py", "--profile", "smoke", "--out", str(Path(tmp) / "nb"),
                                   "--times", str(times)], cwd=ROOT, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            if proc.returncode == 0 and times.exists():
                data = json.loads(times.read_text())
                out["smoke"] = {"total_seconds": data["seconds"]["total"], "per_notebook": {k: v for k, v in data["seconds"].items() if k != "total"},
                                "source": "run by this suite (--with-book)", "wall_seconds": wall}
            else:
                out["smoke_error"] = proc.stderr[-1000:]
        log(f"  book smoke: {wall:.1f} s")
    return out


def run_all(quick: bool = False, with_book: bool = False, threads: int | None = None, in_process: bool | None = None,
            skip_hf: bool = False, log=print) -> dict:
    import torch

    if quick and threads is None:
        threads = 1  # tiny matrices: one thread avoids contention on a shared machine
    if threads:
        torch.set_num_threads(threads)
    in_process = quick if in_process is None else in_process
    p = plan(quick)
    base = {**p["base"], "threads": threads}
    report: dict = {"meta": {**machine_meta(threads), "mode": "quick" if quick else "full", "model": base["model"],
                             "tasks": base["tasks"], "max_train_per_task": base["max_train"], "batch_size": base["batch_size"]}}
    started = time.perf_counter()
    go = lambda spec: run_spec(spec, in_process, log)  # noqa: E731

    report["reference"] = go({"kind": "matmul", "threads": threads, **p["matmul"]})
    sc = {}
    sc["full"] = go({**base, "kind": "train", "label": "full", "trainable": "all"})
    sc["top2"] = go({**base, "kind": "train", "label": "top2", "trainable": 2})
    sc["heads_recompute"] = go({**base, "kind": "train", "label": "heads (recompute)", "trainable": "heads"})
    sc["heads_cached"] = go({**base, "kind": "train", "label": "heads (cached)", "trainable": "cached", **p["cached"]})
    report["scenarios"] = sc
    report["sweep"] = go({**base, "kind": "sweep", "ks": p["ks"], **p["sweep"]})["by_k"]
    report["inference"] = go({**base, "kind": "inference", **p["inference"]})
    report["padding"] = {
        "dynamic": sc["full"],
        "bucketed": go({**base, "kind": "train", "label": "bucketed", "trainable": "all", "bucket": True}),
        "max_length": go({**base, "kind": "train", "label": "max_length", "trainable": "all", "padding": "max_length", **p["slow"]}),
        "stats": go({**base, "kind": "padding_stats"}),
    }
    report["bf16"] = go({**base, "kind": "bf16", **p["bf16"]})
    report["hf_trainer"] = {"skipped": "--skip-hf"} if skip_hf else go({**base, "kind": "hf", **p["hf"]})
    report["profile"] = go({**base, "kind": "profile", **p["profile"]})
    report["book"] = book_times(ROOT / "results", with_book, log)
    report["meta"]["suite_seconds"] = time.perf_counter() - started
    report["meta"]["load_average_end"] = list(os.getloadavg())
    from .flops import __doc__ as formula
    from .report import evaluate_targets

    report["formula"] = formula.strip()
    report["targets"] = evaluate_targets(report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random model and sizes, in-process (< 2 minutes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report JSON (default bench/report.json)")
    parser.add_argument("--md", type=Path, default=DEFAULT_MD, help="rendered page (default book/_generated/benchmarks.md)")
    parser.add_argument("--with-book", action="store_true", help="also execute the smoke-profile book and time it")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-hf", action="store_true", help="skip the Hugging Face Trainer comparison")
    parser.add_argument("--render-only", type=Path, default=None, metavar="REPORT_JSON",
                        help="measure nothing: re-render --md (and rewrite --out) from an existing report")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mtl_helpers.results import write_json_atomic

    from .report import evaluate_targets, render

    if args.render_only:
        report = json.loads(args.render_only.read_text())
        # a re-render changes the page, never the measurements (book times included)
        report["targets"] = evaluate_targets(report)
    else:
        report = run_all(quick=args.quick, with_book=args.with_book, threads=args.threads, skip_hf=args.skip_hf)
    write_json_atomic(args.out, report)
    render(report, args.md)
    for t in report["targets"]:
        print(f"{t['status']:4}  {t['target']}: {t['measured']}")
    print(f"wrote {args.out.name} and {args.md.name} in {report['meta']['suite_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
