"""Benchmark suite of the book: throughput, model FLOP/s, memory, padding, bf16, Hugging Face Trainer,
book time, and a GPU section.

    python -m bench.run [--device auto|cpu|cuda] [--quick] [--with-book] [--compile]
                        [--out bench/report.json] [--md book/_generated/benchmarks.md]
    make bench BENCH_DEVICE=cuda BENCH_ARGS="--with-book"

Every timing runs the package's public API: a real `Trainer.fit` timed by a callback (see
bench/worker.py), so the measured step is the step the book runs.

The CPU suite: each full-mode scenario runs in a fresh subprocess (clean allocator, so its peak RSS
is its own); --quick runs tiny settings in this process (a few minutes; numbers are not meaningful)
and writes under bench/out/ unless --out/--md say otherwise.

The GPU section (report key "gpu"), measured on --device (auto: cuda when torch sees a GPU): full
fine-tuning of all-MiniLM-L6-v2 on N SST-2 training sentences (N = 16,000 on a GPU, 512 on a
CPU, 96 with --quick), one epoch, dynamic padding in length buckets, by this package's Trainer and
by transformers.Trainer at batch 32 and 256, fp32 and bf16; the model FLOP/s as a fraction of a bf16
matmul rate measured in the same run; a few options switched off one at a time; evaluation batch
sizes; a per-step profile; with --with-book, the whole book in the gpu profile. On a CPU the section
runs the same code (the device is named in the report) and its targets are N/A: GPU figures pending.

A run on one device keeps what the report at --out measured on the other: a --device cuda run keeps
its full-mode CPU sections (--cpu-suite measures them again, on this machine's CPU), a --device cpu
run keeps a GPU section measured on CUDA (--fresh drops it).

On a bare GPU machine (Python 3.12 with CUDA torch, no internet):
    bash ../shared/tools/device-pack        # here, from the checkout: model, wheels and data into .devpack/
    # then, in a copy of the checkout that holds .devpack/, on the GPU machine:
    . .devpack/setup.sh && python -m bench.run --device cuda [--with-book]
    # and bring back bench/report.json and book/_generated/ (the run rewrites both there)
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
QUICK_OUT = ROOT / "bench" / "out" / "quick-report.json"  # git-ignored: a quick run never replaces the book's report
QUICK_MD = ROOT / "bench" / "out" / "benchmarks.md"
CPU_SECTIONS = (
    "meta",
    "reference",
    "scenarios",
    "sweep",
    "inference",
    "padding",
    "bf16",
    "hf_trainer",
    "book",
    "profile",
)
SECTIONS = (*CPU_SECTIONS, "gpu", "targets", "formula")
HOW_TO_RUN_GPU = (
    "bash ../shared/tools/device-pack  (here: packs model, wheels and data into .devpack/); then on the GPU "
    "machine, in a copy of the checkout holding .devpack/: . .devpack/setup.sh && python -m bench.run --device cuda"
)

TARGETS = {
    "cached_vs_recompute": 50.0,
    "dynamic_vs_max_length": 2.0,
    "top2_vs_full": 2.0,
    "full_vs_hf": 1.0,
    "full_mfu": 0.40,
    "book_cpu_seconds": 3600.0,
    "book_smoke_seconds": 300.0,
    "gpu_bf16_vs_fp32": 1.5,  # this package, largest batch (256)
    "gpu_ours_vs_hf": 1.2,  # every row of the GPU table
    "gpu_mfu_bf16": 0.10,  # model FLOP/s at batch 256 in bf16 / measured bf16 matmul rate
}

# What each speed option of the GPU section does, and what a GPU run should show if it works.
WHY = {
    "sync_every": "TrainConfig(sync_every=50): the loss and the gradient norm are checked on the device and read by "
    "the host every "
    "50 steps, not every step (a bad update is skipped on the device by the fused AdamW's found_inf and reported at "
    "the "
    "next read). A host read per step empties the GPU's queue: the next step's kernels are launched only after the "
    "last one finished. Expected: a gain where a step is short (batch 32, bf16), none where kernels dominate.",
    "pin_memory": "Batches in page-locked memory (automatic on a CUDA device: Trainer.pin_memory), copied with "
    "non_blocking=True: the host-to-device copy overlaps the previous step's kernels. Always on with CUDA here, "
    "so not switched off below.",
    "bucket_by_length": "TrainConfig(bucket_by_length=True, the default): batches of similar lengths (Hugging Face's "
    "LengthGroupedSampler), so dynamic padding adds few pad tokens; both loops use it. Expected: fewer padded "
    "tokens per example, so more examples/s in both loops.",
    "tf32": "torch.set_float32_matmul_precision('high') for fp32 rows on a GPU (set by the benchmark for both loops): "
    "fp32 "
    "matmuls on tensor cores with a 10-bit mantissa. Expected: fp32 rows much faster; bf16 rows unchanged.",
    "fused_adamw": "AdamW with fused=True (the package's default, and Hugging Face's default optim): one kernel per "
    "parameter "
    "group instead of several per tensor.",
    "compile": "TrainConfig(compile=True): torch.compile of the model in place (Hugging Face: torch_compile=True), off "
    "by "
    "default: fuses element-wise kernels and cuts launches; the first steps compile (and lengths that change "
    "recompile once into a dynamic-shape graph), so it pays only over a long enough run.",
    "eval_batch_size": "TrainConfig(eval_batch_size=...): scoring without gradients fits far larger batches; fewer, "
    "larger "
    "batches mean fewer launches and fewer host reads (evaluation reads each batch's loss on the host).",
}


def plan(quick: bool) -> dict:
    """CPU scenario specs: full mode uses all-MiniLM-L6-v2 on the cpu profile's data sizes."""
    if quick:
        base = {
            "model": "tiny",
            "hidden": 32,
            "layers": 6,
            "tasks": ["trec", "sst2"],
            "max_train": 96,
            "max_eval": 48,
            "batch_size": 16,
            "eval_batch_size": 64,
            "warmup": 1,
            "reps": 2,
            "steps": 2,
        }
        return {
            "base": base,
            "matmul": {"sizes": [256, 512], "reps": 3},
            "ks": [0, 2, 6],
            "slow": {"warmup": 1, "reps": 2, "steps": 1},
            "cached": {"warmup": 2, "reps": 2, "steps": "epoch"},
            "bf16": {"warmup": 1, "reps": 2, "steps": 3},
            "inference": {"rows": 48, "reps": 2},
            "hf": {"tasks": ["sst2"]},
            "profile": {"warmup": 1, "steps": 2, "profile_steps": 1},
            "sweep": {"warmup": 1, "reps": 2, "steps": 1},
        }
    base = {
        "model": "minilm",
        "tasks": ["trec", "sst2"],
        "max_train": 2000,
        "max_eval": 500,
        "batch_size": 32,
        "eval_batch_size": 128,
        "warmup": 3,
        "reps": 5,
        "steps": 5,
    }
    return {
        "base": base,
        "matmul": {"sizes": [1024, 2048], "reps": 7},
        "ks": [0, 2, 4, 6],
        "slow": {"warmup": 1, "reps": 3, "steps": 2},
        "cached": {"warmup": 10, "reps": 5, "steps": "epoch"},
        "bf16": {"warmup": 3, "reps": 5, "steps": 8},
        "inference": {"rows": 500, "reps": 3},
        "hf": {"tasks": ["sst2"]},
        "profile": {"warmup": 2, "steps": 8, "profile_steps": 3},
        "sweep": {"warmup": 2, "reps": 3, "steps": 4},
    }


def gpu_plan(quick: bool, device: str, compile_: bool = False) -> dict:
    """The GPU section's settings: the full comparison on CUDA, a small one on a CPU, a tiny one with --quick."""
    cuda = device == "cuda"
    options = {"sync_every": 50, "tf32": cuda, "compile": compile_, "bucket": True}
    if quick:
        return {
            "model": "tiny",
            "hidden": 32,
            "layers": 6,
            "n_train": 96,
            "batch_sizes": [8, 32],
            "warmup": 1,
            "eval_batch_sizes": [16, 64],
            "matmul": {"sizes": [256, 512], "reps": 3},
            "profile": {"warmup": 1, "steps": 2, "profile_steps": 1},
            "options": options,
        }
    if cuda:
        return {
            "model": "minilm",
            "n_train": 16000,
            "batch_sizes": [32, 256],
            "warmup": 5,
            "eval_batch_sizes": [128, 512, 2048],
            "matmul": {"sizes": [2048, 4096, 8192], "reps": 20},
            "profile": {"warmup": 5, "steps": 20, "profile_steps": 5},
            "options": options,
        }
    return {
        "model": "minilm",
        "n_train": 512,
        "batch_sizes": [32, 256],
        "warmup": 1,
        "eval_batch_sizes": [128, 512],
        "matmul": {"sizes": [1024, 2048], "reps": 7},
        "profile": {"warmup": 1, "steps": 2, "profile_steps": 1},
        "options": options,
    }


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "--device cuda: torch sees no GPU on this machine (torch "
            + torch.__version__
            + "); use --device cpu or auto."
        )
    return name


def run_spec(spec: dict, in_process: bool, log=print) -> dict:
    """A scenario in a fresh `python -m bench.worker` process (or here, for --quick)."""
    started = time.perf_counter()
    if in_process:
        from . import worker

        result = worker.run(spec)
        result["memory_method"] = "in-process (not isolated)"
    else:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "bench.worker", json.dumps(spec)], cwd=ROOT, env=env, capture_output=True, text=True
        )
        line = next((entry for entry in proc.stdout.splitlines()[::-1] if entry.startswith("BENCH_RESULT ")), None)
        if proc.returncode or line is None:
            raise RuntimeError(f"scenario {spec.get('kind')} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(line[len("BENCH_RESULT ") :])
        result["memory_method"] = "fresh subprocess, peak RSS (ru_maxrss)"
    log(f"  {spec['kind']} {spec.get('label', '')}: {time.perf_counter() - started:.1f} s")
    return result


def cpu_model() -> str:
    try:
        return next(
            entry.split(":", 1)[1].strip()
            for entry in Path("/proc/cpuinfo").read_text().splitlines()
            if entry.startswith("model name")
        )
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def machine_meta(threads: int | None) -> dict:
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "timing": "public API: Trainer.fit timed by a callback",
    }


def device_meta(device: str) -> dict:
    """The device the GPU section ran on, by name: torch.cuda.get_device_name, or the CPU model."""
    import torch
    import transformers

    meta = {
        "device_type": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        meta.update(
            device_name=torch.cuda.get_device_name(0),
            cuda=torch.version.cuda,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
        )
    else:
        meta.update(device_name=f"{meta['cpu_model']} (CPU, {torch.get_num_threads()} torch threads)")
    return meta


def notebook_times(path: Path, source: str) -> dict:
    data = json.loads(path.read_text())
    return {
        "total_seconds": data["seconds"]["total"],
        "per_notebook": {k: v for k, v in data["seconds"].items() if k != "total"},
        "source": source,
    }


def run_book(profile: str, log=print) -> dict:
    """Execute every notebook in `profile` into a temporary folder and time it (scripts/run_notebooks.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times.json"
        env = {**os.environ, "MTL_RESULTS_DIR": str(Path(tmp) / "results")}
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "scripts/run_notebooks.py",
                "--profile",
                profile,
                "--out",
                str(Path(tmp) / "nb"),
                "--times",
                str(times),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        log(f"  book {profile}: {wall:.1f} s")
        if proc.returncode == 0 and times.exists():
            return {**notebook_times(times, "run by this suite (--with-book)"), "wall_seconds": wall}
        return {"total_seconds": None, "source": "failed", "error": proc.stderr[-1000:]}


def book_times(results_root: Path, with_book: bool, log=print) -> dict:
    """Wall times of executing the book per profile, from scripts/run_notebooks.py --times files."""
    out = {}
    for profile in ("cpu", "smoke"):
        path = results_root / profile / "notebook_times.json"
        if path.exists():
            out[profile] = notebook_times(path, f"results/{profile}/notebook_times.json")
        else:
            out[profile] = {
                "total_seconds": None,
                "source": "not measured",
                "how": f"python scripts/run_notebooks.py --profile {profile} --times "
                f"results/{profile}/notebook_times.json",
            }
    if with_book:
        measured = run_book("smoke", log)
        if measured.get("total_seconds") is None:
            out["smoke_error"] = measured.get("error", "")
        else:
            out["smoke"] = measured
    return out


def run_cpu_suite(
    quick: bool, with_book: bool, threads: int | None, in_process: bool, skip_hf: bool, log=print
) -> dict:
    p = plan(quick)
    base = {**p["base"], "threads": threads, "device": "cpu"}
    report: dict = {
        "meta": {
            **machine_meta(threads),
            "mode": "quick" if quick else "full",
            "model": base["model"],
            "tasks": base["tasks"],
            "max_train_per_task": base["max_train"],
            "batch_size": base["batch_size"],
            "bucket_by_length": True,
        }
    }
    started = time.perf_counter()

    def go(spec):
        return run_spec(spec, in_process, log)

    report["reference"] = go({"kind": "matmul", "threads": threads, "device": "cpu", **p["matmul"]})
    sc = {}
    sc["full"] = go({**base, "kind": "train", "label": "full", "trainable": "all"})
    sc["top2"] = go({**base, "kind": "train", "label": "top2", "trainable": 2})
    sc["heads_recompute"] = go({**base, "kind": "train", "label": "heads (recompute)", "trainable": "heads"})
    sc["heads_cached"] = go({**base, "kind": "train", "label": "heads (cached)", "trainable": "cached", **p["cached"]})
    report["scenarios"] = sc
    report["sweep"] = go({**base, "kind": "sweep", "ks": p["ks"], **p["sweep"]})["by_k"]
    report["inference"] = go({**base, "kind": "inference", **p["inference"]})
    report[
        "padding"
    ] = {  # the scenarios use the book's default, length buckets; plain dynamic padding is measured here
        "dynamic": go({**base, "kind": "train", "label": "dynamic (no buckets)", "trainable": "all", "bucket": False}),
        "bucketed": sc["full"],
        "max_length": go(
            {
                **base,
                "kind": "train",
                "label": "max_length",
                "trainable": "all",
                "padding": "max_length",
                "bucket": False,
                **p["slow"],
            }
        ),
        "stats": go({**base, "kind": "padding_stats"}),
    }
    report["bf16"] = go({**base, "kind": "bf16", **p["bf16"]})
    report["hf_trainer"] = {"skipped": "--skip-hf"} if skip_hf else go({**base, "kind": "hf", **p["hf"]})
    report["profile"] = go({**base, "kind": "profile", **p["profile"]})
    report["book"] = book_times(ROOT / "results", with_book, log)
    report["meta"]["suite_seconds"] = time.perf_counter() - started
    report["meta"]["load_average_end"] = list(os.getloadavg())
    return report


def run_gpu_section(
    quick: bool,
    device: str,
    in_process: bool,
    threads: int | None,
    with_book: bool,
    compile_: bool,
    skip_hf: bool = False,
    cpu_reference: dict | None = None,
    log=print,
) -> dict:
    """This package's Trainer against transformers.Trainer, one epoch each, per batch size and precision,
    on `device`; the matmul reference, option switches, evaluation batches and a profile on the same device."""
    g = gpu_plan(quick, device, compile_)
    opts = g["options"]
    base = {
        "model": g["model"],
        "hidden": g.get("hidden"),
        "layers": g.get("layers"),
        "tasks": ["sst2"],
        "max_train": g["n_train"],
        "max_eval": 64 if quick else 872,
        "device": device,
        "threads": threads,
        "warmup": g["warmup"],
        "sync_every": opts["sync_every"],
        "tf32": opts["tf32"],
        "compile": opts["compile"],
        "bucket": opts["bucket"],
        "eval_batch_size": max(g["eval_batch_sizes"]),
    }
    base = {k: v for k, v in base.items() if v is not None}

    def go(spec):
        return run_spec(spec, in_process, log)

    started = time.perf_counter()
    out: dict = {
        "meta": {
            **device_meta(device),
            "mode": "quick" if quick else "full",
            "model": g["model"],
            "task": "sst2",
            "n_train": g["n_train"],
            "batch_sizes": g["batch_sizes"],
            "warmup_steps": g["warmup"],
            "options": opts,
            "measured_on_gpu": device == "cuda",
        }
    }
    if device == "cpu" and cpu_reference:
        out["reference"] = {**cpu_reference, "source": "the CPU suite's matmul reference, same run"}
    else:
        out["reference"] = go(
            {"kind": "matmul", "device": device, "threads": threads, "tf32": opts["tf32"], **g["matmul"]}
        )
    precisions = ["fp32", "bf16"]
    bf16, fp32 = (out["reference"].get(d, {}).get("best") or 0 for d in ("bf16", "fp32"))
    if device == "cpu" and not quick and bf16 < 0.5 * fp32:  # emulated bf16: its rows would take hours on a CPU
        precisions = ["fp32"]
        out["meta"]["bf16_skipped"] = (
            f"this CPU multiplies bf16 matrices at {bf16 / 1e9:.1f} GFLOP/s against {fp32 / 1e9:.1f} "
            "in fp32 (no native bf16), so the bf16 rows were left out"
        )
    main = precisions[-1]  # bf16 where it runs natively
    rows = []
    for bs in g["batch_sizes"]:
        for precision in precisions:
            spec = {**base, "kind": "compare", "batch_size": bs, "precision": precision}
            row = {
                "batch_size": bs,
                "precision": precision,
                "ours": go({**spec, "loop": "ours", "label": f"ours b{bs} {precision}"}),
            }
            if skip_hf:
                row["hf"], row["hf_error"] = None, "--skip-hf"
            else:
                try:
                    row["hf"] = go({**spec, "loop": "hf", "label": f"hf b{bs} {precision}"})
                except (ImportError, RuntimeError) as err:  # e.g. accelerate missing on the machine
                    row["hf"], row["hf_error"] = None, str(err).strip().splitlines()[-1][:300]
            row["ratio"] = row["ours"]["examples_per_s"] / row["hf"]["examples_per_s"] if row.get("hf") else None
            rows.append(row)
    out["rows"] = rows
    big = max(g["batch_sizes"])

    def row(precision):
        return next(r for r in rows if r["batch_size"] == big and r["precision"] == precision)

    switches = [
        ("sync_every", "sync_every=1 (a host read every step)", {"sync_every": 1}, main),
        ("bucket_by_length", "no length buckets", {"bucket": False}, main),
    ]
    if device == "cuda":
        switches.append(("tf32", "fp32 without TF32", {"tf32": False}, "fp32"))
        switches.append(
            (
                "compile",
                "without torch.compile" if opts["compile"] else "with torch.compile",
                {"compile": not opts["compile"]},
                main,
            )
        )
    ablations = []
    for option, label, change, precision in switches:
        result = go(
            {
                **base,
                **change,
                "kind": "compare",
                "loop": "ours",
                "batch_size": big,
                "precision": precision,
                "label": f"ours b{big} {precision} {label}",
            }
        )
        baseline = row(precision)["ours"]["examples_per_s"]
        ablations.append(
            {
                "option": option,
                "change": label,
                "precision": precision,
                "batch_size": big,
                "examples_per_s": result["examples_per_s"],
                "baseline_examples_per_s": baseline,
                "speedup_of_option": baseline / result["examples_per_s"],
                "mean_padded_len": result["mean_padded_len"],
            }
        )
    out["ablations"] = ablations
    out["eval_batches"] = go(
        {
            **base,
            "kind": "eval_batches",
            "batch_size": big,
            "precision": main,
            "eval_batch_sizes": g["eval_batch_sizes"],
            "label": "evaluation batch sizes",
        }
    )
    out["profile"] = go(
        {
            **base,
            "kind": "profile",
            "batch_size": big,
            "precision": main,
            **g["profile"],
            "label": f"profile b{big} {main}",
        }
    )
    ref = (out["reference"].get(main) or {}).get("best")
    flops = row(main)["ours"]["flops_per_s"]
    out["mfu"] = {
        "batch_size": big,
        "precision": main,
        "flops_per_s": flops,
        f"matmul_{main}_best": ref,
        "fraction": flops / ref if flops and ref else None,
    }
    if with_book and device == "cuda":
        out["book"] = {"gpu": run_book("gpu", log)}
    out["why"] = WHY
    out["how_to_run"] = HOW_TO_RUN_GPU
    out["meta"]["section_seconds"] = time.perf_counter() - started
    return out


def carried(previous: dict | None, keys, note: str) -> dict:
    out = {k: previous[k] for k in keys if k in (previous or {})}
    if "meta" in out:
        out["meta"] = {**out["meta"], "carried": note}
    return out


def full_cpu_report(previous: dict | None) -> bool:
    return bool(previous) and previous.get("meta", {}).get("mode") == "full" and "scenarios" in previous


def gpu_measured_on_cuda(previous: dict | None) -> bool:
    return bool(previous) and (previous.get("gpu") or {}).get("meta", {}).get("device_type") == "cuda"


def run_all(
    quick: bool = False,
    with_book: bool = False,
    threads: int | None = None,
    in_process: bool | None = None,
    skip_hf: bool = False,
    device: str = "auto",
    previous: dict | None = None,
    cpu_suite: bool | None = None,
    fresh: bool = False,
    compile_: bool = False,
    log=print,
) -> dict:
    import torch

    device = resolve_device(device)
    if quick and threads is None:
        threads = 1  # tiny matrices: one thread avoids contention on a shared machine
    if threads:
        torch.set_num_threads(threads)
    in_process = quick if in_process is None else in_process
    previous = None if (quick or fresh) else previous
    started = time.perf_counter()
    if device == "cuda" and not cpu_suite and full_cpu_report(previous):
        log("CPU sections: kept from the previous report (--cpu-suite measures them again)")
        report = carried(previous, CPU_SECTIONS, "kept from the previous report by a --device cuda run")
    else:
        log("CPU suite")
        report = run_cpu_suite(quick, with_book and device == "cpu", threads, in_process, skip_hf, log)
    if device == "cpu" and gpu_measured_on_cuda(previous):
        log("GPU section: kept from the previous report, measured on CUDA (--fresh measures it again on this CPU)")
        report["gpu"] = {
            **previous["gpu"],
            "meta": {**previous["gpu"]["meta"], "carried": "kept from the previous report"},
        }
    else:
        log(f"GPU section on {device}")
        report["gpu"] = run_gpu_section(
            quick,
            device,
            in_process,
            threads,
            with_book,
            compile_,
            skip_hf,
            report.get("reference") if device == "cpu" else None,
            log,
        )
    report["meta"]["run_seconds"] = time.perf_counter() - started
    report["meta"]["device_argument"] = device
    from .flops import __doc__ as formula
    from .report import evaluate_targets

    report["formula"] = formula.strip()
    report["targets"] = evaluate_targets(report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="device of the GPU section (auto: cuda when torch sees a GPU); the CPU suite always runs on the CPU",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model and sizes, in-process; writes under bench/out/"
    )
    parser.add_argument("--out", type=Path, default=None, help="report JSON (default bench/report.json)")
    parser.add_argument("--md", type=Path, default=None, help="rendered page (default book/_generated/benchmarks.md)")
    parser.add_argument(
        "--with-book",
        action="store_true",
        help="also execute the whole book and time it: the gpu profile on a GPU, the smoke profile on a CPU",
    )
    parser.add_argument(
        "--compile", action="store_true", help="GPU section: torch.compile in both loops (TrainConfig(compile=True))"
    )
    parser.add_argument(
        "--cpu-suite", action="store_true", help="with --device cuda: measure the CPU suite again instead of keeping it"
    )
    parser.add_argument("--fresh", action="store_true", help="keep nothing from the previous report at --out")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-hf", action="store_true", help="skip the Hugging Face Trainer comparisons")
    parser.add_argument(
        "--render-only",
        type=Path,
        default=None,
        metavar="REPORT_JSON",
        help="measure nothing: re-render --md (and rewrite --out) from an existing report",
    )
    args = parser.parse_args(argv)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    md = args.md or (QUICK_MD if args.quick else DEFAULT_MD)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from mtl_helpers.jsonio import write_json_atomic

    from .report import evaluate_targets, render

    if args.render_only:
        report = json.loads(args.render_only.read_text())
        # a re-render changes the page, never the measurements (book times included)
        report["targets"] = evaluate_targets(report)
    else:
        previous = json.loads(out.read_text()) if out.exists() else None
        report = run_all(
            quick=args.quick,
            with_book=args.with_book,
            threads=args.threads,
            skip_hf=args.skip_hf,
            device=args.device,
            previous=previous,
            cpu_suite=args.cpu_suite,
            fresh=args.fresh,
            compile_=args.compile,
        )
    write_json_atomic(out, report)
    render(report, md)
    for t in report["targets"]:
        print(f"{t['status']:4}  {t['target']}: {t['measured']}")
    seconds = report["meta"].get("run_seconds", report["meta"].get("suite_seconds", 0))
    print(f"wrote {out.name} and {md.name} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
