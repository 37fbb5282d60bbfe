"""Targets (PASS/MISS with the measured value and the reason of a miss) and the rendered MyST page."""
from __future__ import annotations

import math
from pathlib import Path

from mtl_helpers.results import atomic_write_bytes


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def gflops(x) -> str:
    return "n/a" if x is None else f"{x / 1e9:.1f}"


def num(x, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _top_op(report) -> str:
    ops = _get(report, "profile", "top_ops") or []
    if not ops:
        return "no profile"
    return ", ".join(f"{o['op']} {100 * o['share']:.0f}%" for o in ops[:3])


def _hf_reason(report: dict) -> str:
    """Why the package loop trails Hugging Face: noise if the repetitions overlap, else the loop."""
    ours = _get(report, "hf_trainer", "ours", "examples_per_s_reps") or []
    hf = _get(report, "hf_trainer", "hf", "examples_per_s_reps") or []
    if ours and hf and max(ours) >= min(hf):
        return (f"within noise: the repetitions overlap (ours {min(ours):.1f}-{max(ours):.1f}, Hugging Face "
                f"{min(hf):.1f}-{max(hf):.1f} examples/s); both run the same model, fused AdamW and clipping")
    return "the package loop is slower in every repetition: see the phase table for where its step time goes"


def evaluate_targets(report: dict) -> list[dict]:
    """One row per target: threshold, measured value, PASS/MISS (or NOT MEASURED) and why."""
    from .run import TARGETS

    sc = report.get("scenarios", {})
    rows = []

    def add(name, target, measured, ok, why=""):
        status = "N/A" if ok is None else ("PASS" if ok else "MISS")
        rows.append({"target": name, "threshold": target, "measured": measured, "status": status, "why": "" if ok else why})

    ref32 = _get(report, "reference", "fp32", "best")
    full, top2 = sc.get("full", {}), sc.get("top2", {})
    rec, cached = sc.get("heads_recompute", {}), sc.get("heads_cached", {})
    r = rec.get("epoch_seconds") / cached["epoch_seconds"] if rec.get("epoch_seconds") and cached.get("epoch_seconds") else None
    add("heads on cached features vs recomputing the frozen backbone (per epoch)", f">= {TARGETS['cached_vs_recompute']:.0f}x",
        f"{num(r)}x", None if r is None else r >= TARGETS["cached_vs_recompute"],
        "a cached step still pays the DataLoader, default_collate of one feature tensor per row, AdamW, clipping and "
        "per-step bookkeeping (see the phase table), a fixed cost comparable to a small backbone forward")
    dyn, mx = _get(report, "padding", "dynamic", "examples_per_s"), _get(report, "padding", "max_length", "examples_per_s")
    r = dyn / mx if dyn and mx else None
    frac = _get(report, "padding", "stats", "dynamic", "useful_fraction")
    add("dynamic padding vs padding to 128 tokens (TREC + SST-2, full fine-tuning)", f">= {TARGETS['dynamic_vs_max_length']:.0f}x",
        f"{num(r)}x", None if r is None else r >= TARGETS["dynamic_vs_max_length"],
        f"only {100 * (frac or 0):.0f}% of the dynamically padded tokens are real; the rest of a step is not per-token work")
    r = full["seconds_per_step"] / top2["seconds_per_step"] if full.get("seconds_per_step") and top2.get("seconds_per_step") else None
    add("top 2 of 6 layers trainable vs full fine-tuning (per step)", f">= {TARGETS['top2_vs_full']:.0f}x", f"{num(r, 2)}x",
        None if r is None else r >= TARGETS["top2_vs_full"],
        "the forward of all 6 layers is still paid (1/3 of full fine-tuning's FLOPs), so the analytic ceiling "
        "is 18/(6+2*2)=1.8x; the embedding-matrix gradient and AdamW over 22.7M parameters (23.2M with heads) "
        "that full fine-tuning also pays add to it only for full")
    hf = _get(report, "hf_trainer", "hf", "examples_per_s")
    ours = _get(report, "hf_trainer", "ours", "examples_per_s")
    r = ours / hf if ours and hf else None
    add("full fine-tuning vs Hugging Face Trainer (same work, SST-2)", f">= {TARGETS['full_vs_hf']:.1f}x", f"{num(r, 2)}x",
        None if r is None else r >= TARGETS["full_vs_hf"],
        _hf_reason(report) if r else _get(report, "hf_trainer", "error") or "")
    mfu = full.get("flops_per_s") / ref32 if full.get("flops_per_s") and ref32 else None
    add("full fine-tuning achieved model FLOP/s vs fp32 matmul", f">= {100 * TARGETS['full_mfu']:.0f}%",
        "n/a" if mfu is None else f"{100 * mfu:.1f}% ({gflops(full.get('flops_per_s'))} of {gflops(ref32)} GFLOP/s)",
        None if mfu is None else mfu >= TARGETS["full_mfu"],
        f"batches of ~{num(full.get('mean_padded_len'))} padded tokens give matmuls of {(report.get('meta', {}).get('batch_size') or 0) * (full.get('mean_padded_len') or 0):.0f} rows x hidden size, "
        f"far from the square 2048 matmul's efficiency; dominant ops: {_top_op(report)}")
    for profile, key in (("cpu", "book_cpu_seconds"), ("smoke", "book_smoke_seconds")):
        t = _get(report, "book", profile, "total_seconds")
        add(f"whole book, {profile} profile", f"<= {TARGETS[key] / 60:.0f} min",
            "not measured" if t is None else f"{t / 60:.1f} min", None if t is None else t <= TARGETS[key],
            "see the per-notebook times")
    return rows


# ------------------------------------------------------------------------------ rendering
def _table(header: list[str], rows: list[list]) -> str:
    clean = lambda c: str(c).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _save(fig, folder: Path, name: str, caption: str) -> tuple[str, str]:
    """Save a figure for the page and free it; returns (file name, caption)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name, caption


def figures(report: dict, folder: Path) -> list[tuple[str, str]]:
    """Up to three PNG figures in `folder`; returns (file name, alt text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    sc = report.get("scenarios", {})
    labels = {"full": "full fine-tuning", "top2": "top 2 layers", "heads_recompute": "heads, backbone recomputed", "heads_cached": "heads, cached features"}
    names = [k for k in labels if _get(sc, k, "examples_per_s")]
    if names:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.barh([labels[k] for k in names], [sc[k]["examples_per_s"] for k in names], color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel("training throughput (examples/s, log scale)")
        ax.set_title("Training throughput per scenario (median of repetitions)")
        out.append(_save(fig, folder, "bench_scenarios.png", "Training throughput per scenario"))
    sweep = report.get("sweep") or {}
    if sweep:
        ks = sorted(sweep, key=int)
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.plot([int(k) for k in ks], [1000 * sweep[k]["seconds_per_step"] for k in ks], "o-", label="measured")
        ax.set_xlabel("trainable top layers k (of 6)")
        ax.set_ylabel("time per step (ms)")
        ax.set_title("Step time against the number of trainable layers")
        ax2 = ax.twinx()
        ax2.plot([int(k) for k in ks], [sweep[k]["flops_per_s"] / 1e9 for k in ks], "s--", color="tab:orange", label="model GFLOP/s")
        ax2.set_ylabel("achieved model GFLOP/s", color="tab:orange")
        out.append(_save(fig, folder, "bench_topk.png", "Step time and achieved FLOP/s against k"))
    pad = report.get("padding") or {}
    modes = [m for m in ("dynamic", "bucketed", "max_length") if _get(pad, m, "examples_per_s")]
    if modes:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.bar(modes, [pad[m]["examples_per_s"] for m in modes], color=["tab:green", "tab:olive", "tab:red"][: len(modes)])
        ax.set_ylabel("examples/s (full fine-tuning)")
        ax.set_xlabel("padding of each batch")
        ax.set_title("Dynamic padding and length buckets against fixed 128 tokens")
        out.append(_save(fig, folder, "bench_padding.png", "Throughput per padding mode"))
    return out


def markdown(report: dict, figs: list[tuple[str, str]], image_prefix: str = "_generated/") -> str:
    m = report.get("meta", {})
    ref = report.get("reference", {})
    sc = report.get("scenarios", {})
    ref32 = _get(ref, "fp32", "best")
    parts = []
    mode_note = " **Quick mode: a tiny random model on tiny data; the numbers only test the suite.**" if m.get("mode") == "quick" else ""
    parts.append(
        f"Generated by `python -m bench.run` ({m.get('mode')} mode) on {m.get('date_utc')} UTC, in one run on one machine: "
        f"{m.get('cpu_model')}, {m.get('logical_cpus')} logical CPUs, {m.get('torch_threads')} torch threads, torch {m.get('torch')}, "
        f"transformers {m.get('transformers')}. Load average at start {num(m['load_average_start'][0], 2) if m.get('load_average_start') else 'n/a'}, "
        f"at end {num(m['load_average_end'][0], 2) if m.get('load_average_end') else 'n/a'} (the machine may be shared: read ratios measured in "
        f"the same run, not absolute numbers). Model {m.get('model')}, tasks {', '.join(m.get('tasks', []))}, "
        f"{m.get('max_train_per_task')} training rows per task, batch {m.get('batch_size')}. Throughputs are medians over timed repetitions "
        f"after warm-up steps; each step's time includes drawing and collating its batch.{mode_note}"
    )
    # targets
    parts.append("# Targets\n\n" + _table(["target", "threshold", "measured", "status", "why (if missed)"],
                                          [[t["target"], t["threshold"], t["measured"], t["status"], t["why"]] for t in report.get("targets", [])]))
    parts.append("# Machine reference\n\nMedian of repeated `torch.matmul` of square matrices; 2 n^3 FLOPs each.\n\n" + _table(
        ["dtype", *[f"n={n} (GFLOP/s)" for n in _get(ref, "fp32", "by_size") or {}], "best (GFLOP/s)"],
        [[d, *[gflops(v) for v in ref[d]["by_size"].values()], gflops(ref[d]["best"])] for d in ("fp32", "bf16") if d in ref]))
    labels = {"full": "full fine-tuning", "top2": "top 2 layers + heads", "heads_recompute": "heads only, backbone recomputed", "heads_cached": "heads only, cached features"}
    rows = []
    for key, label in labels.items():
        s = sc.get(key)
        if not s:
            continue
        rows.append([label, f"{s['trainable_params']:,}", num(s["examples_per_s"]), num(1000 * s["seconds_per_step"], 2),
                     num(s["epoch_seconds"], 2), gflops(s["flops_per_s"]), f"{100 * s['flops_per_s'] / ref32:.1f}%" if ref32 else "n/a",
                     num(s["peak_rss_mb"], 0), num(s["rss_growth_mb"], 0)])
    parts.append(
        "# Training scenarios\n\nTwo tasks (TREC, SST-2) trained together, proportional task sampling. Epoch time = training rows / "
        "throughput (cached: the measured epochs). Peak RSS is the whole scenario process (Python, torch, data, model); "
        "growth is the RSS growth during the timed steps.\n\n" + _table(
            ["scenario", "trainable params", "examples/s", "ms/step", "s/epoch", "model GFLOP/s", "of fp32 matmul", "peak RSS (MB)", "RSS growth (MB)"], rows))
    cached = sc.get("heads_cached")
    if cached:
        parts.append(f"Computing the cached features once (tokenizing and embedding every split with the frozen encoder) took "
                     f"{num(cached.get('setup_seconds'), 1)} s, against {num(_get(sc, 'heads_recompute', 'setup_seconds'), 1)} s of "
                     f"tokenizing alone for the recomputing trainer.")
    sweep = report.get("sweep") or {}
    if sweep:
        parts.append("# Trainable top layers\n\n`train_only(model, *top_groups(model, k), 'heads')`; k=0 is heads only with the backbone recomputed.\n\n" + _table(
            ["k", "trainable params", "ms/step", "examples/s", "model GFLOP/s", "speed-up over k=6"],
            [[k, f"{v['trainable_params']:,}", num(1000 * v["seconds_per_step"], 2), num(v["examples_per_s"]), gflops(v["flops_per_s"]),
              f"{sweep[max(sweep, key=int)]['seconds_per_step'] / v['seconds_per_step']:.2f}x"] for k, v in sorted(sweep.items(), key=lambda x: int(x[0]))]))
    inf = report.get("inference") or {}
    if inf:
        parts.append("# Inference of the frozen encoder\n\n`model.embed` in eval mode without gradients, dynamic padding.\n\n" + _table(
            ["precision", "batch", "examples/s", "model GFLOP/s", "of the matmul reference of that dtype"],
            [[p, v["batch_size"], num(v["examples_per_s"]), gflops(v["flops_per_s"]),
              f"{100 * v['flops_per_s'] / ref[p]['best']:.1f}%" if p in ref else "n/a"] for p, v in inf.items() if isinstance(v, dict) and "examples_per_s" in v]))
    pad = report.get("padding") or {}
    if pad:
        stats = pad.get("stats", {})
        rows = []
        for mode, label in (("dynamic", "dynamic (longest in batch)"), ("bucketed", "dynamic + length buckets"), ("max_length", "fixed 128 tokens")):
            v = pad.get(mode)
            if not v:
                continue
            rows.append([label, num(v["examples_per_s"]), num(v["mean_padded_len"]), f"{100 * _get(stats, mode, 'useful_fraction'):.0f}%" if _get(stats, mode, "useful_fraction") else "n/a",
                         gflops(v["flops_per_s"]), num(pad["dynamic"]["examples_per_s"] / v["examples_per_s"], 2) + "x"])
        parts.append("# Padding\n\nFull fine-tuning on TREC + SST-2. Useful tokens: real tokens / padded tokens over one epoch.\n\n" + _table(
            ["padding", "examples/s", "mean padded length", "useful tokens", "model GFLOP/s", "dynamic padding's speed-up over this row"], rows))
    bf = report.get("bf16") or {}
    if bf.get("fp32") and bf.get("bf16"):
        tasks = list(bf["fp32"]["validation_accuracy"])
        steps = bf["fp32"]["warmup_steps"] + bf["fp32"]["reps"] * bf["fp32"]["steps_per_rep"]
        parts.append(f"# bf16 autocast\n\nTwo identical full fine-tuning runs of {steps} steps (same seed, same batches), the second with "
                     "`TrainConfig(precision=\"bf16\")` (autocast to bfloat16 around forward and loss in training and evaluation; "
                     "weights and optimizer state stay fp32).\n\n" + _table(
            ["precision", "examples/s", "ms/step", "model GFLOP/s", *[f"{t} val. accuracy" for t in tasks], "mean loss, last 10 steps"],
            [[p, num(bf[p]["examples_per_s"]), num(1000 * bf[p]["seconds_per_step"], 2), gflops(bf[p]["flops_per_s"]),
              *[f"{bf[p]['validation_accuracy'][t]:.3f}" for t in tasks], f"{bf[p]['final_loss']:.3f}"] for p in ("fp32", "bf16")])
            + f"\n\nbf16 speed-up: {bf['bf16']['examples_per_s'] / bf['fp32']['examples_per_s']:.2f}x.")
    hf = report.get("hf_trainer") or {}
    if hf.get("ours"):
        ms = lambda v: num(1000 * v["seconds_per_step"], 2) if v.get("seconds_per_step") else "n/a"  # noqa: E731
        rows = [["mtl_helpers Trainer (Trainer._step)", num(hf["ours"]["examples_per_s"]), ms(hf["ours"])]]
        if hf.get("hf"):
            rows.append([f"transformers.Trainer {hf['hf'].get('transformers', '')}".strip(), num(hf["hf"]["examples_per_s"]), ms(hf["hf"])])
        note = (f"Ratio (ours / Hugging Face): {hf['ours']['examples_per_s'] / hf['hf']['examples_per_s']:.2f}x." if hf.get("hf")
                else f"Hugging Face Trainer not measured: {hf.get('error')}.")
        parts.append("# Against Hugging Face Trainer\n\nSST-2 alone, full fine-tuning, same model wrapped to return `{'loss': ...}`, "
                     f"batch {m.get('batch_size')}, dynamic padding, fused AdamW in both (Hugging Face's default `optim`, and the package's), "
                     "gradient clipping 1.0, the same number of steps; no evaluation, "
                     "checkpoints or logging (`report_to='none'`, `dataloader_num_workers=0`).\n\n"
                     + _table(["loop", "examples/s", "ms/step"], rows) + "\n\n" + note)
    prof = report.get("profile") or {}
    if prof:
        ph = prof["phase_seconds"]
        parts.append("# Where a step's time goes\n\nFull fine-tuning, phases of `Trainer._step` timed separately (medians):\n\n" + _table(
            ["phase", "ms", "share"], [[k, num(1000 * v, 2), f"{100 * prof['phase_share'][k]:.1f}%"] for k, v in ph.items()])
            + "\n\nTop operators by self CPU time (`torch.profiler`, a few steps):\n\n" + _table(
            ["operator", "ms/step", "share", "calls/step"],
            [[f"`{o['op']}`", num(o["self_ms_per_step"], 2), f"{100 * o['share']:.1f}%", num(o["calls_per_step"], 0)] for o in prof["top_ops"]]))
    book = report.get("book") or {}
    rows = []
    for profile in ("cpu", "smoke"):
        b = book.get(profile) or {}
        rows.append([profile, "not measured" if b.get("total_seconds") is None else f"{b['total_seconds'] / 60:.1f} min",
                     b.get("source", ""), b.get("how", "")])
    parts.append("# Executing the book\n\n" + _table(["profile", "wall time", "source", "how to measure"], rows))
    parts.append("# How model FLOPs are counted\n\n```text\n" + report.get("formula", "") + "\n```")
    if figs:
        parts.append("# Figures\n\n" + "\n\n".join(f"![{alt}]({image_prefix}{name})" for name, alt in figs))
    return "\n\n".join(parts) + "\n"


def render(report: dict, md_path: Path, image_prefix: str = "_generated/") -> Path:
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    figs = figures(report, md_path.parent)
    return atomic_write_bytes(md_path, markdown(report, figs, image_prefix).encode())
