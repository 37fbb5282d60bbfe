"""Benchmark suite of the book: throughput, model FLOP/s, memory, padding, bf16, Hugging Face Trainer,
book time, and a GPU section.

    python -m bench.run [--device auto|cpu|cuda] [--quick] [--with-book] [--compile] [--no-bf16]
                        [--out bench/report.json] [--md book/_generated/benchmarks.md]
    python -m bench.run --plan      # the CPU plan's work per section and its estimated seconds
    make bench BENCH_DEVICE=cuda BENCH_ARGS="--with-book"

Every timing runs the package's public API: a real `Trainer.fit` timed by a callback (see
bench/worker.py), so the measured step is the step the book runs.

The CPU suite: each full-mode scenario runs in a fresh subprocess (clean allocator, so its peak RSS
is its own) and times a fixed number of steps after warm-up (never whole epochs of training); --quick
runs tiny settings in this process (under a minute; numbers are not meaningful) and writes under
bench/out/ unless --out/--md say otherwise.

Time budget: a full CPU run (`make bench` on a machine without a GPU: the CPU suite and the GPU
section's CPU stand-in) must finish within BUDGET_SECONDS (15 minutes) on a 2-core CPU. Its plan is
sized for PLANNED_SECONDS (10 minutes) by a cost model of a slow 2-core CPU (`planned_work`; print it
with --plan); each section's wall time goes into the report (meta.section_seconds), the run prints them
against the plan's estimates, and the appendix shows them. bf16 is measured only where the CPU has it
natively (avx512_bf16 or amx_bf16 in /proc/cpuinfo; `flops.cpu_has_native_bf16`): torch emulates it
elsewhere, so slowly that one bf16 matmul at n = 2048 ran past 10 minutes on an AVX2-only machine.
Those sections then say why they were left out (--no-bf16 leaves bf16 out everywhere).

The GPU section (report key "gpu"), measured on --device (auto: cuda when torch sees a GPU): full
fine-tuning of all-MiniLM-L6-v2 on N SST-2 training sentences (N = 16,000 on a GPU, 256 on a
CPU, 96 with --quick), one epoch, dynamic padding in length buckets, by this package's Trainer and
by transformers.Trainer at batch 32 and 256 (16 and 64 on a CPU), fp32 and bf16 (fp32 only on a CPU
in full mode); the model FLOP/s as a fraction of a matmul rate measured in the same run; a few options
switched off one at a time; evaluation batch sizes; a per-step profile; with --with-book, the whole
book in the gpu profile. On a CPU the section runs the same code (the device is named in the report)
and its targets are N/A: GPU figures pending.

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
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import flops
from .machine import machine_description

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


# The time budget of a full CPU `make bench` (CPU suite and the GPU section's CPU stand-in) on a 2-core
# machine, and the time its plan is sized for by the cost model below (the rest is margin).
BUDGET_SECONDS = 900.0
PLANNED_SECONDS = 600.0
# The cost model of `planned_work`, for a slow 2-core CPU (AVX2 only, or AVX512-BF16 without AMX), on a quiet
# machine. Work is counted in full fine-tuning examples of MiniLM in fp32 (batch 32, about 30 padded tokens:
# 90 examples/s measured on the 2-core AVX512-BF16 EPYC and on the 2-core AMX Xeon, so 40 leaves a margin).
EXAMPLES_PER_S = 40.0
PROCESS_SECONDS = 10.0  # a fresh worker: importing torch and transformers, loading the data and the model (6-9 s)
COST = {
    "forward": 0.5,  # an example through the encoder without gradients (inference, evaluation, embedding)
    "max_length": 6.5,  # an example padded to 128 tokens instead of ~30 (measured 5.5x and 6.4x)
    "bf16": 1.0,  # bf16 autocast training where bf16 is native (measured 0.5x fp32's time on the EPYC, 0.65x on AMX)
    "profiled": 1.5,  # a step under torch.profiler
    "cached": 0.01,  # a step of the heads alone on cached features
}
NO_NATIVE_BF16 = (
    "this CPU has no native bf16 (neither avx512_bf16 nor amx_bf16 in its flags): torch emulates bf16 there, far "
    "slower than fp32 (a single bf16 matmul at n = 2048 ran past 10 minutes), so bf16 was not measured"
)
SCENARIO_OF_K = {0: "heads_recompute", 2: "top2"}  # sweep points the scenarios already measure, alike


def bf16_left_out(quick: bool, allow: bool = True) -> str | None:
    """Why the CPU suite measures no bf16, or None when it does: only where the CPU has native bf16
    (AVX512-BF16 or AMX). --quick runs the bf16 code paths regardless (a tiny model: seconds even emulated)."""
    if not allow:
        return "left out by --no-bf16"
    if quick or flops.cpu_has_native_bf16():
        return None
    return NO_NATIVE_BF16


def plan(quick: bool, bf16: bool = True) -> dict:
    """CPU scenario specs: full mode uses all-MiniLM-L6-v2 on the cpu profile's data sizes, a fixed number
    of steps after warm-up per scenario (never whole epochs, except the cheap cached-feature steps)."""
    skipped = bf16_left_out(quick, bf16)
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
            "ks": [0, 2, 4, 6],
            "slow": {"warmup": 1, "reps": 2, "steps": 1},
            "cached": {"warmup": 2, "reps": 2, "steps": "epoch"},
            "bf16": {"warmup": 1, "reps": 2, "steps": 3, "max_eval": 48, "skipped": skipped},
            "inference": {"rows": 48, "reps": 2},
            "hf": {"tasks": ["sst2"]},
            "profile": {"warmup": 1, "steps": 2, "profile_steps": 1},
        }
    base = {
        "model": "minilm",
        "tasks": ["trec", "sst2"],
        "max_train": 2000,
        "max_eval": 500,
        "batch_size": 32,
        "eval_batch_size": 128,
        "warmup": 2,
        "reps": 3,
        "steps": 5,
    }
    return {
        "base": base,
        "matmul": {"sizes": [1024, 2048], "reps": 5},
        "ks": [0, 2, 4, 6],
        "slow": {"warmup": 1, "reps": 2, "steps": 2},
        "cached": {"warmup": 10, "reps": 3, "steps": "epoch"},
        "bf16": {"warmup": 2, "reps": 3, "steps": 5, "max_eval": 200, "skipped": skipped},
        "inference": {"rows": 250, "reps": 2},
        "hf": {"tasks": ["sst2"]},
        "profile": {"warmup": 2, "steps": 5, "profile_steps": 2},
    }


def cpu_specs(p: dict, threads: int | None = None, skip_hf: bool = False) -> dict[str, dict[str, dict]]:
    """The CPU suite as worker specs, per report section: what `run_cpu_suite` runs and `planned_work` counts."""
    base = {**p["base"], "threads": threads, "device": "cpu"}
    bf16 = p["bf16"]
    precisions = ["fp32"] if bf16["skipped"] else ["fp32", "bf16"]
    train = {**base, "kind": "train"}
    return {
        "reference": {
            "matmul": {"kind": "matmul", "threads": threads, "device": "cpu", "dtypes": precisions, **p["matmul"]}
        },
        "scenarios": {
            "full": {**train, "label": "full", "trainable": "all"},
            "top2": {**train, "label": "top2", "trainable": 2},
            "heads_recompute": {**train, "label": "heads (recompute)", "trainable": "heads"},
            "heads_cached": {**train, "label": "heads (cached)", "trainable": "cached", **p["cached"]},
        },
        "sweep": {"sweep": {**base, "kind": "sweep", "ks": [k for k in p["ks"] if k not in SCENARIO_OF_K]}},
        "inference": {"inference": {**base, "kind": "inference", "precisions": precisions, **p["inference"]}},
        "padding": {  # the scenarios use the book's default, length buckets; plain dynamic padding is measured here
            "dynamic": {**train, "label": "dynamic (no buckets)", "trainable": "all", "bucket": False},
            "max_length": {
                **train,
                "label": "max_length",
                "trainable": "all",
                "padding": "max_length",
                "bucket": False,
                **p["slow"],
            },
            "stats": {**base, "kind": "padding_stats", "in_process": True},  # collation only: nothing timed
        },
        "bf16": {}
        if bf16["skipped"]
        else {"bf16": {**base, "kind": "bf16", **{k: v for k, v in bf16.items() if k != "skipped"}}},
        "hf_trainer": {} if skip_hf else {"hf": {**base, "kind": "hf", **p["hf"]}},
        "profile": {"profile": {**base, "kind": "profile", **p["profile"]}},
    }


def gpu_plan(quick: bool, device: str, compile_: bool = False, bf16: bool = True) -> dict:
    """The GPU section's settings: the full comparison on CUDA, a small one on a CPU, a tiny one with --quick.

    On a CPU (full mode) the section is a stand-in that tests the GPU path: a small N, batches 16 and 64,
    fp32 only (bf16 on a CPU is the CPU suite's bf16 section, where the CPU has it natively)."""
    cuda = device == "cuda"
    options = {"sync_every": 50, "tf32": cuda, "compile": compile_, "bucket": True}
    both = ["fp32", "bf16"] if bf16 else ["fp32"]
    skipped = None if bf16 else "left out by --no-bf16"
    if quick:
        return {
            "model": "tiny",
            "hidden": 32,
            "layers": 6,
            "n_train": 96,
            "max_eval": 64,
            "batch_sizes": [8, 32],
            "precisions": both,
            "bf16_skipped": skipped,
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
            "max_eval": 872,
            "batch_sizes": [32, 256],
            "precisions": both,
            "bf16_skipped": skipped,
            "warmup": 5,
            "eval_batch_sizes": [128, 512, 2048],
            "matmul": {"sizes": [2048, 4096, 8192], "reps": 20},
            "profile": {"warmup": 5, "steps": 20, "profile_steps": 5},
            "options": options,
        }
    return {
        "model": "minilm",
        "n_train": 256,
        "max_eval": 256,
        "batch_sizes": [16, 64],
        "precisions": ["fp32"],
        "bf16_skipped": skipped
        or "the CPU stand-in runs fp32 only, to keep the CPU run within its time budget; bf16 on this CPU is "
        "measured in the CPU suite's bf16 section, where the CPU has it natively",
        "warmup": 1,
        "eval_batch_sizes": [64, 256],
        "matmul": {"sizes": [1024, 2048], "reps": 5},
        "profile": {"warmup": 1, "steps": 2, "profile_steps": 1},
        "options": options,
    }


def gpu_specs(g: dict, device: str, threads: int | None = None, skip_hf: bool = False) -> dict:
    """The GPU section as worker specs: rows (batch x precision x loop), option switches, evaluation batches and
    the profile; what `run_gpu_section` runs and `planned_work` counts."""
    opts = g["options"]
    base = {
        "model": g["model"],
        "hidden": g.get("hidden"),
        "layers": g.get("layers"),
        "tasks": ["sst2"],
        "max_train": g["n_train"],
        "max_eval": g["max_eval"],
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
    main = g["precisions"][-1]  # bf16 where it runs
    big = max(g["batch_sizes"])
    rows = []
    for bs in g["batch_sizes"]:
        for precision in g["precisions"]:
            spec = {**base, "kind": "compare", "batch_size": bs, "precision": precision}
            loops = ["ours"] if skip_hf else ["ours", "hf"]
            rows.append(
                (bs, precision, {loop: {**spec, "loop": loop, "label": f"{loop} b{bs} {precision}"} for loop in loops})
            )
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
    ablations = [
        (
            option,
            label,
            precision,
            {
                **base,
                **change,
                "kind": "compare",
                "loop": "ours",
                "batch_size": big,
                "precision": precision,
                "label": f"ours b{big} {precision} {label}",
            },
        )
        for option, label, change, precision in switches
    ]
    return {
        "base": base,
        "main": main,
        "big": big,
        "rows": rows,
        "ablations": ablations,
        "eval_batches": {
            **base,
            "kind": "eval_batches",
            "batch_size": big,
            "precision": main,
            "eval_batch_sizes": g["eval_batch_sizes"],
            "label": "evaluation batch sizes",
        },
        "profile": {
            **base,
            "kind": "profile",
            "batch_size": big,
            "precision": main,
            **g["profile"],
            "label": f"profile b{big} {main}",
        },
    }


# ------------------------------------------------------------------------------ the plan's cost
def train_weight(spec: dict, trainable) -> float:
    """Cost of a training example relative to full fine-tuning in fp32 at ~30 tokens: the forward of every
    layer and the backward of the trainable ones, (L + 2k) / 3L; padding to 128 tokens and bf16 cost more."""
    layers = spec.get("layers", 6)
    k = layers if trainable == "all" else 0 if trainable in ("heads", "cached") else int(trainable)
    weight = (layers + 2 * k) / (3 * layers)
    if spec.get("padding") == "max_length":
        weight *= COST["max_length"]
    if spec.get("precision") == "bf16":
        weight *= COST["bf16"]
    return weight


def fit_work(spec: dict, trainable=None) -> dict:
    """Steps, example passes and work (full fine-tuning examples) of one timed fit: warm-up + reps x steps."""
    trainable = spec.get("trainable", "all") if trainable is None else trainable
    bs = spec["batch_size"]
    steps = spec["steps"]
    if steps == "epoch":
        steps = len(spec["tasks"]) * -(-spec["max_train"] // bs)
    total = spec["warmup"] + spec["reps"] * steps
    rows = total * bs
    if trainable == "cached":  # embedding every training row once, then steps of the heads alone
        embedded = spec["max_train"] * len(spec["tasks"])
        return {"steps": total, "rows": rows + embedded, "work": embedded * COST["forward"] + rows * COST["cached"]}
    return {"steps": total, "rows": rows, "work": rows * train_weight(spec, trainable)}


def add_work(*parts: dict) -> dict:
    return {key: sum(part.get(key, 0) for part in parts) for key in ("steps", "rows", "work", "seconds")}


def evaluation_work(rows: int) -> dict:
    return {"steps": 0, "rows": rows, "work": rows * COST["forward"]}


def spec_work(spec: dict) -> dict:
    """What one worker spec costs: steps, example passes, work (in full fine-tuning examples) and fixed seconds."""
    kind = spec["kind"]
    tasks = len(spec.get("tasks", []))
    if kind == "matmul":  # Timer: 0.1 s x reps per size and dtype, plus the warm-up products
        return {"seconds": len(spec["sizes"]) * len(spec.get("dtypes", ["fp32", "bf16"])) * (0.1 * spec["reps"] + 1)}
    if kind == "train":
        return fit_work(spec)
    if kind == "sweep":
        return add_work(*[fit_work(spec, k) for k in spec["ks"]])
    if kind == "padding_stats":  # three collations of one epoch, no model
        return {"seconds": 3.0}
    if kind == "inference":
        passes = (spec["reps"] + 1) * len(spec.get("precisions", ["fp32", "bf16"]))
        return evaluation_work(min(spec["rows"], spec["max_train"]) * tasks * passes)
    if kind == "bf16":
        return add_work(
            *[fit_work({**spec, "precision": p}, "all") for p in ("fp32", "bf16")],
            evaluation_work(2 * spec["max_eval"] * tasks),
        )
    if kind == "hf":  # this package's Trainer and transformers.Trainer, the same steps
        once = fit_work(spec, "all")
        return add_work(once, once)
    if kind == "profile":
        bs = spec["batch_size"]
        fit = fit_work({**spec, "reps": 1}, "all")  # warm-up + steps
        profiled = spec["profile_steps"] * bs
        work = profiled * COST["profiled"] * train_weight(spec, "all")
        return add_work(fit, {"steps": spec["profile_steps"], "rows": profiled, "work": work})
    if kind == "compare":  # one epoch of the first task
        n, bs = spec["max_train"], spec["batch_size"]
        return {"steps": -(-n // bs), "rows": n, "work": n * train_weight(spec, "all")}
    if kind == "eval_batches":  # the validation split (warm-up) and the training rows, per evaluation batch size
        return evaluation_work(len(spec["eval_batch_sizes"]) * (spec["max_eval"] + spec["max_train"]))
    raise ValueError(f"no cost for a {kind!r} spec")


def timed_text(spec: dict) -> str:
    """What a spec times, for the report: warm-up steps, repetitions x steps, batch."""
    kind = spec["kind"]
    if kind == "matmul":
        return f"matmul n = {', '.join(map(str, spec['sizes']))}; {0.1 * spec['reps']:.1f} s of products per size"
    if kind in ("train", "sweep", "bf16", "hf"):
        steps = spec["steps"] if spec["steps"] != "epoch" else "an epoch of"
        return f"{spec['warmup']} warm-up + {spec['reps']} x {steps} steps, batch {spec['batch_size']}"
    if kind == "inference":
        return f"{spec['reps']} passes over {spec['rows']} rows per task (after one warm-up pass)"
    if kind == "profile":
        return f"{spec['warmup']} warm-up + {spec['steps']} steps, {spec['profile_steps']} under torch.profiler"
    if kind == "compare":
        return f"one epoch of {spec['max_train']} rows, {spec['warmup']} warm-up step(s)"
    if kind == "eval_batches":
        return f"evaluation of {spec['max_train']} rows per batch size"
    return "collation only, nothing timed"


def section_cost(specs: list[dict]) -> dict:
    parts = [spec_work(s) for s in specs]
    total = add_work(*parts)
    processes = sum(not s.get("in_process") for s in specs)
    total.update(
        processes=processes,
        estimated_seconds=round(total["work"] / EXAMPLES_PER_S + total["seconds"] + processes * PROCESS_SECONDS, 1),
        work=round(total["work"], 1),
        timed="; ".join(dict.fromkeys(timed_text(s) for s in specs)),
    )
    del total["seconds"]
    return total


def planned_work(quick: bool = False, bf16: bool = True, skip_hf: bool = False, gpu: bool = True) -> dict:
    """The CPU run's planned work per section (steps, example passes, work in full fine-tuning examples,
    worker processes) and its estimated seconds on a slow 2-core CPU (the cost model above); `gpu`: with the
    GPU section's CPU stand-in, as `make bench` runs it on a machine without a GPU."""
    specs = cpu_specs(plan(quick, bf16), None, skip_hf)
    sections = {name: section_cost(list(section.values())) for name, section in specs.items() if section}
    if gpu:
        g = gpu_specs(gpu_plan(quick, "cpu", bf16=bf16), "cpu", None, skip_hf)
        specs = [s for _, _, loops in g["rows"] for s in loops.values()]
        specs += [s for *_, s in g["ablations"]] + [g["eval_batches"], g["profile"]]
        sections["gpu"] = section_cost(specs)
    return {
        "sections": sections,
        "work": round(sum(s["work"] for s in sections.values()), 1),
        "processes": sum(s["processes"] for s in sections.values()),
        "estimated_seconds": round(sum(s["estimated_seconds"] for s in sections.values()), 1),
        "cost_model": {"examples_per_s": EXAMPLES_PER_S, "process_seconds": PROCESS_SECONDS, **COST},
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
    """A scenario in a fresh `python -m bench.worker` process (or here, for --quick or a spec marked
    in_process: one that times nothing)."""
    started = time.perf_counter()
    if in_process or spec.get("in_process"):
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
    return machine_description()["cpu_model"]


def machine_meta(threads: int | None) -> dict:
    """The machine the CPU figures come from: the CPU by name, its flags that matter (avx2, avx512_bf16,
    amx_bf16), cores, torch threads, versions and the date."""
    import torch
    import transformers

    return {
        **machine_description(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": threads or torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "timing": "public API: Trainer.fit timed by a callback",
    }


def device_meta(device: str) -> dict:
    """The device the GPU section ran on, by name: torch.cuda.get_device_name, or the CPU model."""
    import torch
    import transformers

    machine = machine_description()
    meta = {
        "device_type": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date_utc": machine["date_utc"],
        "cpu_model": machine["cpu_model"],
        "cpu_flags": machine["cpu_flags"],
        "logical_cpus": machine["logical_cpus"],
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
    """A scripts/run_notebooks.py --times file: the total, seconds per notebook, and the machine when the file
    records it (files written before it did hold none)."""
    data = json.loads(path.read_text())
    return {
        "total_seconds": data["seconds"]["total"],
        "per_notebook": {k: v for k, v in data["seconds"].items() if k != "total"},
        "machine": data.get("machine"),
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


class SectionClock:
    """Each section's wall time, into the report's meta (section_seconds), and a log line per section."""

    def __init__(self, seconds: dict, log=print):
        self.seconds, self.log = seconds, log

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 1)
        self.log(f"{name}: {self.seconds[name]:.0f} s")


def run_cpu_suite(
    quick: bool,
    with_book: bool,
    threads: int | None,
    in_process: bool,
    skip_hf: bool,
    log=print,
    bf16: bool = True,
) -> dict:
    p = plan(quick, bf16)
    specs = cpu_specs(p, threads, skip_hf)
    base = p["base"]
    report: dict = {
        "meta": {
            **machine_meta(threads),
            "mode": "quick" if quick else "full",
            "model": base["model"],
            "tasks": base["tasks"],
            "max_train_per_task": base["max_train"],
            "batch_size": base["batch_size"],
            "bucket_by_length": True,
            "bf16_skipped": p["bf16"]["skipped"],
            "section_seconds": {},
        }
    }
    started = time.perf_counter()
    section = SectionClock(report["meta"]["section_seconds"], log)

    def go(spec):
        return run_spec(spec, in_process, log)

    with section("reference"):
        report["reference"] = go(specs["reference"]["matmul"])
    with section("scenarios"):
        sc = report["scenarios"] = {key: go(spec) for key, spec in specs["scenarios"].items()}
    with section("sweep"):  # k = 0 and 2 are the scenarios heads_recompute and top2, measured alike
        measured = go(specs["sweep"]["sweep"])["by_k"]
        by_k = {**{str(k): sc[name] for k, name in SCENARIO_OF_K.items()}, **measured}
        report["sweep"] = dict(sorted(by_k.items(), key=lambda item: int(item[0])))
    with section("inference"):
        report["inference"] = go(specs["inference"]["inference"])
        if p["bf16"]["skipped"]:
            report["inference"]["bf16_skipped"] = p["bf16"]["skipped"]
    with section("padding"):
        pad = {key: go(spec) for key, spec in specs["padding"].items()}
        report["padding"] = {"dynamic": pad["dynamic"], "bucketed": sc["full"], **pad}
    with section("bf16"):
        bf = specs["bf16"]
        report["bf16"] = go(bf["bf16"]) if bf else {"skipped": p["bf16"]["skipped"]}
    with section("hf_trainer"):
        report["hf_trainer"] = {"skipped": "--skip-hf"} if skip_hf else go(specs["hf_trainer"]["hf"])
    with section("profile"):
        report["profile"] = go(specs["profile"]["profile"])
    with section("book"):
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
    bf16: bool = True,
) -> dict:
    """This package's Trainer against transformers.Trainer, one epoch each, per batch size and precision,
    on `device`; the matmul reference, option switches, evaluation batches and a profile on the same device."""
    g = gpu_plan(quick, device, compile_, bf16)
    opts = g["options"]
    specs = gpu_specs(g, device, threads, skip_hf)
    main, big = specs["main"], specs["big"]

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
    if g["bf16_skipped"]:
        out["meta"]["bf16_skipped"] = g["bf16_skipped"]
    if device == "cpu" and cpu_reference:
        out["reference"] = {**cpu_reference, "source": "the CPU suite's matmul reference, same run"}
    else:
        dtypes = ["fp32", "bf16"] if "bf16" in g["precisions"] else ["fp32"]
        out["reference"] = go(
            {
                "kind": "matmul",
                "device": device,
                "threads": threads,
                "tf32": opts["tf32"],
                "dtypes": dtypes,
                **g["matmul"],
            }
        )
    rows = []
    for bs, precision, loops in specs["rows"]:
        row = {"batch_size": bs, "precision": precision, "ours": go(loops["ours"])}
        if skip_hf:
            row["hf"], row["hf_error"] = None, "--skip-hf"
        else:
            try:
                row["hf"] = go(loops["hf"])
            except (ImportError, RuntimeError) as err:  # e.g. accelerate missing on the machine
                row["hf"], row["hf_error"] = None, str(err).strip().splitlines()[-1][:300]
        row["ratio"] = row["ours"]["examples_per_s"] / row["hf"]["examples_per_s"] if row.get("hf") else None
        rows.append(row)
    out["rows"] = rows

    def row(precision):
        return next(r for r in rows if r["batch_size"] == big and r["precision"] == precision)

    ablations = []
    for option, label, precision, spec in specs["ablations"]:
        result = go(spec)
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
    out["eval_batches"] = go(specs["eval_batches"])
    out["profile"] = go(specs["profile"])
    ref = (out["reference"].get(main) or {}).get("best")
    flops_per_s = row(main)["ours"]["flops_per_s"]
    out["mfu"] = {
        "batch_size": big,
        "precision": main,
        "flops_per_s": flops_per_s,
        f"matmul_{main}_best": ref,
        "fraction": flops_per_s / ref if flops_per_s and ref else None,
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


def budget_lines(report: dict) -> list[str]:
    """Each section's wall time against the plan's estimate, and the run's total against the budget."""
    meta = report.get("meta", {})
    seconds = meta.get("section_seconds") or {}
    planned = (meta.get("plan") or {}).get("sections", {})
    lines = [
        f"  {name:<11} {seconds[name]:7.0f} s   (estimated {planned[name]['estimated_seconds']:.0f} s)"
        if name in planned
        else f"  {name:<11} {seconds[name]:7.0f} s"
        for name in seconds
    ]
    total = meta.get("run_seconds")
    if total is not None:
        budget = meta.get("budget_seconds", BUDGET_SECONDS)
        lines.append(
            f"  total       {total:7.0f} s   {'within' if total <= budget else 'OVER'} the budget of {budget:.0f} s "
            + (f"(plan estimated {meta['plan']['estimated_seconds']:.0f} s on a slow 2-core CPU)" if planned else "")
        )
    return lines


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
    bf16: bool = True,
) -> dict:
    import torch

    device = resolve_device(device)
    if quick and threads is None:
        threads = 1  # tiny matrices: one thread avoids contention on a shared machine
    if threads:
        torch.set_num_threads(threads)
    in_process = quick if in_process is None else in_process
    previous = None if (quick or fresh) else previous
    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cpus:
        log(
            f"Warning: load average {load:.1f} on {cpus} logical CPUs: other processes compete for the cores, so the "
            "timings are unreliable and the run can take several times its budget (torch's threads wait on each other)"
        )
    started = time.perf_counter()
    measured_here = not (device == "cuda" and not cpu_suite and full_cpu_report(previous))
    if not measured_here:
        log("CPU sections: kept from the previous report (--cpu-suite measures them again)")
        report = carried(previous, CPU_SECTIONS, "kept from the previous report by a --device cuda run")
    else:
        log("CPU suite")
        if not quick:  # the cost model is MiniLM's in worker processes: no estimate for the tiny in-process run
            stand_in = device == "cpu" and not gpu_measured_on_cuda(previous)
            work = planned_work(quick, bf16, skip_hf, gpu=stand_in)
            log(f"  planned: {work['processes']} processes, about {work['estimated_seconds']:.0f} s on a slow CPU")
        report = run_cpu_suite(quick, with_book and device == "cpu", threads, in_process, skip_hf, log, bf16=bf16)
        report["meta"]["budget_seconds"] = BUDGET_SECONDS
        if not quick:
            report["meta"]["plan"] = work
    if device == "cpu" and gpu_measured_on_cuda(previous):
        log("GPU section: kept from the previous report, measured on CUDA (--fresh measures it again on this CPU)")
        report["gpu"] = {
            **previous["gpu"],
            "meta": {**previous["gpu"]["meta"], "carried": "kept from the previous report"},
        }
    else:
        log(f"GPU section on {device}")
        gpu_started = time.perf_counter()
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
            bf16=bf16,
        )
        if measured_here:
            report["meta"].setdefault("section_seconds", {})["gpu"] = round(time.perf_counter() - gpu_started, 1)
    report["meta"]["run_seconds"] = time.perf_counter() - started
    report["meta"]["device_argument"] = device
    if measured_here:
        log("Wall time per section:\n" + "\n".join(budget_lines(report)))
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
        "--no-bf16",
        action="store_true",
        help="measure no bf16, as on a CPU without native bf16 (where the suite leaves it out by itself)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="measure nothing: print the CPU plan's work per section and its estimated seconds",
    )
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

    if args.plan:
        work = planned_work(args.quick, not args.no_bf16, args.skip_hf, gpu=resolve_device(args.device) == "cpu")
        for name, cost in work["sections"].items():
            print(
                f"{name:<11} {cost['estimated_seconds']:6.0f} s  {cost['processes']:2d} processes  {cost['steps']:5d} "
                f"steps  {cost['rows']:6d} example passes  work {cost['work']:7.0f}  ({cost['timed']})"
            )
        print(
            f"total       {work['estimated_seconds']:6.0f} s  {work['processes']:2d} processes  work {work['work']:.0f}"
            f"  (budget {BUDGET_SECONDS:.0f} s; cost model: {work['cost_model']})"
        )
        return 0
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
            bf16=not args.no_bf16,
        )
    layer_cache = (QUICK_OUT.parent if args.quick else ROOT / "bench") / "layer_cache.json"
    if layer_cache.exists():  # bench/layer_cache.py, which `make bench` runs first
        report["layer_cache"] = json.loads(layer_cache.read_text())
    write_json_atomic(out, report)
    render(report, md)
    for t in report["targets"]:
        print(f"{t['status']:4}  {t['target']}: {t['measured']}")
    seconds = report["meta"].get("run_seconds", report["meta"].get("suite_seconds", 0))
    print(f"wrote {out.name} and {md.name} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
