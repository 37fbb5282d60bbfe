"""One benchmark scenario per call; `python -m bench.worker '<json spec>'` runs it in a fresh process
and prints one line `BENCH_RESULT <json>` (so peak RSS is that of this scenario alone)."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from mtl_helpers import MultiTaskModel, load_task  # noqa: E402
from mtl_helpers.groups import top_groups, train_only  # noqa: E402
from mtl_helpers.optim import constant_schedule  # noqa: E402
from mtl_helpers.train import PeakMemory, TrainConfig, Trainer, _to  # noqa: E402

from .flops import forward_flops, matmul_flops, step_flops  # noqa: E402

MARK = "BENCH_RESULT "
_CACHE: dict = {}


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ------------------------------------------------------------------------------ set-up
def load_tasks(spec: dict) -> list:
    key = ("tasks", tuple(spec["tasks"]), spec["max_train"], spec["max_eval"])
    if key not in _CACHE:
        _CACHE[key] = [load_task(t, max_train=spec["max_train"], max_eval=spec["max_eval"]) for t in spec["tasks"]]
    return _CACHE[key]


def tokenizer_and_encoder(spec: dict):
    """all-MiniLM-L6-v2 ('minilm'), or a tiny random BERT of 6 layers ('tiny') with the same tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtl_helpers import load_encoder
    from mtl_helpers.encoder import default_model_path

    torch.manual_seed(spec.get("seed", 0))
    if spec["model"] == "minilm":
        return load_encoder()[::-1]
    if "tok" not in _CACHE:
        _CACHE["tok"] = AutoTokenizer.from_pretrained(default_model_path())
    hidden = spec.get("hidden", 32)
    config = BertConfig(vocab_size=_CACHE["tok"].vocab_size, hidden_size=hidden, num_hidden_layers=spec.get("layers", 6),
                        num_attention_heads=2, intermediate_size=4 * hidden, max_position_embeddings=512)
    return _CACHE["tok"], BertModel(config)


def trainable_layers(trainable, n_layers: int) -> int:
    """Layers that get a backward: all (full), k (top-k), 0 (heads only / cached)."""
    if trainable == "all":
        return n_layers
    if trainable in ("heads", "cached"):
        return 0
    return int(trainable)


def build(spec: dict, tasks: list | None = None):
    tasks = tasks or load_tasks(spec)
    tok, encoder = tokenizer_and_encoder(spec)
    model = MultiTaskModel.for_tasks(encoder, tasks)
    trainable = spec.get("trainable", "all")
    if trainable in ("heads", "cached"):
        train_only(model, "heads")
    elif trainable != "all":
        train_only(model, *top_groups(model, int(trainable)), "heads")  # k <= layers: transformer layers only
    config = TrainConfig(
        batch_size=spec["batch_size"], eval_batch_size=spec.get("eval_batch_size", 128), lr=spec.get("lr", 1e-3),
        backbone_lr=spec.get("backbone_lr", 5e-5), schedule="constant", padding=spec.get("padding", "longest"),
        bucket_by_length=spec.get("bucket", False), cache_features=trainable == "cached", eval_train=False,
        seed=spec.get("seed", 0), device="cpu", progress=False,
    )
    started = time.perf_counter()
    trainer = Trainer(model, tok, tasks, config)
    setup_seconds = time.perf_counter() - started
    return trainer, setup_seconds


# ------------------------------------------------------------------------------ the timed loop
def batch_stream(trainer: Trainer):
    """Batches in the order Trainer.fit draws them (the trainer's own stream)."""
    return trainer.train_batches()[1]


def steps_per_epoch(trainer: Trainer) -> int:
    return sum(trainer.train_batches()[0].values())


def timed_training(trainer: Trainer, spec: dict, warmup: int, reps: int, steps: int) -> dict:
    """`warmup` steps, then `reps` repetitions of `steps` steps through the package's Trainer._step.

    Each step's time includes drawing and collating its batch (the DataLoader), like Trainer.fit.
    """
    n_layers = trainer.model.encoder.config.num_hidden_layers
    k = trainable_layers(spec.get("trainable", "all"), n_layers)
    cached = spec.get("trainable") == "cached"
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    scheduler = constant_schedule(trainer.optimizer)
    trainer.model.train()
    stream = batch_stream(trainer)
    rows = []
    with PeakMemory(trainer.device) as memory:
        for i in range(warmup + reps * steps):
            started = time.perf_counter()
            task, batch = next(stream)
            trainer._step(task, _to(batch, trainer.device), params, scheduler)  # autocasts per config.precision
            seconds = time.perf_counter() - started
            size = len(batch["labels"])
            padded = 0 if cached else batch["input_ids"].shape[1]
            real = 0 if cached else int(batch["attention_mask"].sum())
            classes = trainer.model.head(task).num_labels
            flops = step_flops(trainer.model.encoder.config, size, padded, k, classes, backbone=not cached)
            rows.append((seconds, size, size * padded, real, flops))
    timed = rows[warmup:]
    per_rep = []
    for r in range(reps):
        chunk = timed[r * steps : (r + 1) * steps]
        sec = sum(c[0] for c in chunk)
        per_rep.append({"seconds": sec, "examples": sum(c[1] for c in chunk), "padded_tokens": sum(c[2] for c in chunk),
                        "real_tokens": sum(c[3] for c in chunk), "flops": sum(c[4] for c in chunk)})
    eps = [p["examples"] / p["seconds"] for p in per_rep]
    fps = [p["flops"] / p["seconds"] for p in per_rep]
    sps = [p["seconds"] / steps for p in per_rep]
    total_examples = sum(p["examples"] for p in per_rep)
    return {
        "examples_per_s": statistics.median(eps), "examples_per_s_reps": eps,
        "seconds_per_step": statistics.median(sps), "flops_per_s": statistics.median(fps),
        "flops_per_example": sum(p["flops"] for p in per_rep) / total_examples,
        "mean_padded_len": (sum(p["padded_tokens"] for p in per_rep) / total_examples) if not cached else 0.0,
        "mean_real_len": (sum(p["real_tokens"] for p in per_rep) / total_examples) if not cached else 0.0,
        "warmup_steps": warmup, "reps": reps, "steps_per_rep": steps, "trainable_layers": k,
        "trainable_params": sum(p.numel() for p in params),
        "rss_growth_mb": round(memory.peak_mb, 1),
    }


# ------------------------------------------------------------------------------ scenarios
def run_train(spec: dict) -> dict:
    trainer, setup = build(spec)
    n_train = sum(len(trainer._data[t]["train"]) for t in trainer.tasks)
    steps = spec["steps"]
    if steps == "epoch":
        steps = steps_per_epoch(trainer)
    out = timed_training(trainer, spec, spec["warmup"], spec["reps"], steps)
    out.update(setup_seconds=setup, train_rows=n_train, epoch_seconds=n_train / out["examples_per_s"],
               steps_per_epoch=steps_per_epoch(trainer))
    return out


def run_sweep(spec: dict) -> dict:
    out = {}
    for k in spec["ks"]:
        out[str(k)] = run_train({**spec, "trainable": k})
    return {"by_k": out}


def padding_stats(spec: dict) -> dict:
    """Real / padded tokens over one epoch of batches, per padding mode (collation only, no model)."""
    out = {}
    for name, padding, bucket in (("dynamic", "longest", False), ("bucketed", "longest", True), ("max_length", "max_length", False)):
        trainer, _ = build({**spec, "padding": padding, "bucket": bucket, "trainable": "heads"})
        real = padded = 0
        stream = batch_stream(trainer)
        for _ in range(steps_per_epoch(trainer)):
            _, batch = next(stream)
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
        out[name] = {"real_tokens": real, "padded_tokens": padded, "useful_fraction": real / padded}
    return out


def run_bf16(spec: dict) -> dict:
    """Identical short full fine-tuning runs (same seed, same batches) in fp32 and under bf16 autocast."""
    out = {}
    for precision in ("fp32", "bf16"):
        trainer, _ = build({**spec, "trainable": "all"})
        trainer.config.precision = precision  # the package's own option: autocast in training and evaluation
        timing = timed_training(trainer, spec, spec["warmup"], spec["reps"], spec["steps"])
        started = time.perf_counter()
        metrics = trainer.evaluate("validation")
        out[precision] = {**timing, "eval_seconds": time.perf_counter() - started,
                          "validation_accuracy": {t: m["accuracy"] for t, m in metrics.items()},
                          "final_loss": float(np.mean([s["loss"] for s in trainer.history.steps[-10:]]))}
    return out


def run_inference(spec: dict) -> dict:
    """Frozen-encoder throughput: model.embed in eval mode without gradients, fp32 and bf16 autocast."""
    from mtl_helpers.data import make_collator

    trainer, _ = build({**spec, "trainable": "heads"})
    model = trainer.model.eval()
    rows, task = [], None
    for name, data in trainer._data.items():
        rows += data["train"][: spec["rows"]]
        task = trainer.tasks[name]
    collate = make_collator(task, trainer.tokenizer, "longest", trainer.config.max_length)
    bs = spec["eval_batch_size"]
    batches = [collate(rows[i : i + bs]) for i in range(0, len(rows), bs)]
    out = {}
    for precision in ("fp32", "bf16"):
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
        times = []
        with torch.no_grad():
            for rep in range(spec["reps"] + 1):
                started = time.perf_counter()
                for b in batches:
                    with ctx():
                        model.embed(b)
                times.append(time.perf_counter() - started)
        times = times[1:]  # first pass is warm-up
        flops = sum(forward_flops(model.encoder.config, b["input_ids"].shape[0], b["input_ids"].shape[1]) for b in batches)
        t = statistics.median(times)
        out[precision] = {"examples_per_s": len(rows) / t, "flops_per_s": flops / t, "rows": len(rows), "batch_size": bs}
    return out


def run_hf(spec: dict) -> dict:
    """Single-task full fine-tuning: the package's loop against transformers.Trainer on the same work."""
    ours = run_train({**spec, "trainable": "all"})
    try:
        hf = run_hf_trainer(spec)
    except ImportError as err:
        return {"ours": ours, "hf": None, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    return {"ours": ours, "hf": hf}


def run_hf_trainer(spec: dict) -> dict:
    import transformers
    from torch import nn
    from transformers import TrainerCallback, TrainingArguments
    from transformers import Trainer as HFTrainer

    from mtl_helpers.data import encode_rows, make_collator

    tasks = load_tasks(spec)
    task = tasks[0]
    tok, encoder = tokenizer_and_encoder(spec)
    model = MultiTaskModel.for_tasks(encoder, [task])

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            batch = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                batch["token_type_ids"] = token_type_ids
            logits = self.inner(task.name, batch)
            return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}

    rows = encode_rows(task, task.splits["train"], tok, 128)
    steps = spec["warmup"] + spec["reps"] * spec["steps"]
    stamps: list = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=spec["batch_size"], max_steps=steps, learning_rate=5e-5,
            weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="constant",  # optim: HF's default (fused AdamW)
            eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
            dataloader_num_workers=0, use_cpu=True, disable_tqdm=True, seed=spec.get("seed", 0),
        )
        trainer = HFTrainer(model=Wrapped(model), args=args, train_dataset=rows,
                            data_collator=make_collator(task, tok, "longest", 128), callbacks=[Clock()])
        trainer.train()
    # stamps[0] is the start of step 1; stamps[i] the end of step i. Time of step i = stamps[i] - stamps[i-1]
    # (it includes the next batch's collation, which HF draws between steps).
    w, s = spec["warmup"], spec["steps"]
    per_rep = []
    for r in range(spec["reps"]):
        a, b = w + r * s, w + (r + 1) * s
        per_rep.append(s * spec["batch_size"] / (stamps[b] - stamps[a]))
    return {"examples_per_s": statistics.median(per_rep), "examples_per_s_reps": per_rep,
            "seconds_per_step": spec["batch_size"] / statistics.median(per_rep), "transformers": transformers.__version__}


def run_profile(spec: dict) -> dict:
    """Where a full fine-tuning step's time goes: phases of Trainer._step, and torch.profiler's top ops."""
    from torch.nn.utils import clip_grad_norm_
    from torch.profiler import ProfilerActivity, profile

    from mtl_helpers.optim import lr_table

    trainer, _ = build({**spec, "trainable": "all"})
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    scheduler = constant_schedule(trainer.optimizer)
    trainer.model.train()
    stream = batch_stream(trainer)
    phases = {k: [] for k in ("data", "forward", "backward", "clip", "optimizer", "scheduler+zero_grad", "bookkeeping")}
    for i in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        task, batch = next(stream)
        batch = _to(batch, trainer.device)
        t1 = time.perf_counter()
        loss = trainer._loss(task, batch)
        torch.isfinite(loss)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        clip_grad_norm_(params, 1.0)
        t4 = time.perf_counter()
        trainer.optimizer.step()
        t5 = time.perf_counter()
        scheduler.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        t6 = time.perf_counter()
        trainer.history.steps.append({"step": i, "task": task, "loss": loss.item(), "lr": lr_table(trainer.optimizer)})
        t7 = time.perf_counter()
        if i >= spec["warmup"]:
            for key, value in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6)):
                value and phases[key].append(value)
    median = {k: statistics.median(v) if v else 0.0 for k, v in phases.items()}
    total = sum(median.values())
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(spec["profile_steps"]):
            task, batch = next(stream)
            trainer._step(task, _to(batch, trainer.device), params, scheduler)
    table = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in table) or 1
    top = sorted(table, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    ops = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / spec["profile_steps"],
            "share": e.self_cpu_time_total / total_self, "calls_per_step": e.count / spec["profile_steps"]} for e in top]
    return {"phase_seconds": median, "phase_share": {k: v / total for k, v in median.items()}, "top_ops": ops}


def run_matmul(spec: dict) -> dict:
    return matmul_flops(tuple(spec["sizes"]), reps=spec["reps"])


KINDS = {"train": run_train, "sweep": run_sweep, "padding_stats": padding_stats, "bf16": run_bf16,
         "inference": run_inference, "hf": run_hf, "profile": run_profile, "matmul": run_matmul}


def run(spec: dict) -> dict:
    """Run one scenario in this process; adds peak RSS and the wall time."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    started = time.perf_counter()
    base = rss_mb()
    result = KINDS[spec["kind"]](spec)
    result["wall_seconds"] = time.perf_counter() - started
    result["rss_start_mb"] = round(base, 1)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def main() -> int:
    spec = json.loads(sys.argv[1])
    result = run(spec)
    print(MARK + json.dumps(result, default=float), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
