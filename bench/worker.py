"""One benchmark scenario per call; `python -m bench.worker '<json spec>'` runs it in a fresh process
and prints one line `BENCH_RESULT <json>` (so peak memory is that of this scenario alone).

Every timing goes through the package's public API: a real `Trainer.fit` with a `StepClock`
callback that stamps the end of each step, so the measured step is the one the book runs (drawing
and collating the batch, the copy to the device, the rate schedule, forward, loss, backward,
clipping, the divergence check, AdamW, the history record and the callbacks). What a step saw (batch
size, padded length) comes from a forward pre-hook on the model; the phases of a step from torch's
own hooks (forward hooks, gradient-accumulation hooks on the parameters, the optimizer's step hooks).
Nothing here reads an underscore attribute of the package.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from mtl_helpers import Callback, MultiTaskModel, Trainer, TrainConfig, load_task, make_loader, multitask_stream  # noqa: E402
from mtl_helpers.batches import encode_rows, make_collator  # noqa: E402
from mtl_helpers.groups import top_groups, train_only  # noqa: E402

from .flops import forward_flops, matmul_flops, step_flops  # noqa: E402

MARK = "BENCH_RESULT "
CACHE: dict = {}


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def set_matmul_precision(spec: dict) -> None:
    """TF32 for fp32 matmuls on a GPU when the spec asks (torch's "high" precision), else exact fp32."""
    tf32 = bool(spec.get("tf32")) and is_cuda(spec.get("device", "cpu"))
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32


# ------------------------------------------------------------------------------ set-up
def load_tasks(spec: dict) -> list:
    key = ("tasks", tuple(spec["tasks"]), spec["max_train"], spec["max_eval"])
    if key not in CACHE:
        CACHE[key] = [load_task(t, max_train=spec["max_train"], max_eval=spec["max_eval"]) for t in spec["tasks"]]
    return CACHE[key]


def tokenizer_and_encoder(spec: dict):
    """all-MiniLM-L6-v2 ('minilm'), or a tiny random BERT of 6 layers ('tiny') with the same tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mtl_helpers import load_encoder
    from mtl_helpers.encoder import default_model_path

    torch.manual_seed(spec.get("seed", 0))
    if spec["model"] == "minilm":
        return load_encoder()[::-1]
    if "tok" not in CACHE:
        CACHE["tok"] = AutoTokenizer.from_pretrained(default_model_path())
    hidden = spec.get("hidden", 32)
    config = BertConfig(
        vocab_size=CACHE["tok"].vocab_size,
        hidden_size=hidden,
        num_hidden_layers=spec.get("layers", 6),
        num_attention_heads=2,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    return CACHE["tok"], BertModel(config)


def trainable_layers(trainable, n_layers: int) -> int:
    """Layers that get a backward: all (full), k (top-k), 0 (heads only / cached)."""
    if trainable == "all":
        return n_layers
    if trainable in ("heads", "cached"):
        return 0
    return int(trainable)


def config_for(spec: dict, trainable="all") -> TrainConfig:
    """The run's TrainConfig: the book's defaults except a constant rate, no evaluation and no bar."""
    options = dict(
        batch_size=spec["batch_size"],
        eval_batch_size=spec.get("eval_batch_size", 128),
        lr=spec.get("lr", 1e-3),
        backbone_lr=spec.get("backbone_lr", 5e-5),
        schedule="constant",
        padding=spec.get("padding", "longest"),
        bucket_by_length=spec.get("bucket", True),
        cache_features=trainable == "cached",
        eval_every=None,
        eval_train=False,
        precision=spec.get("precision", "fp32"),
        seed=spec.get("seed", 0),
        device=spec.get("device", "cpu"),
        progress=False,
        sync_every=spec.get("sync_every", 1),
    )
    if spec.get("compile"):
        options["compile"] = True
    return TrainConfig(**options)


class Run:
    """A trainer built for a scenario, with its clock, and how long building it took."""

    def __init__(self, trainer: Trainer, clock: "StepClock", setup_seconds: float, k: int, cached: bool):
        self.trainer, self.clock, self.setup_seconds, self.k, self.cached = trainer, clock, setup_seconds, k, cached


def build(spec: dict, tasks: list | None = None) -> Run:
    tasks = tasks or load_tasks(spec)
    set_matmul_precision(spec)
    tok, encoder = tokenizer_and_encoder(spec)
    model = MultiTaskModel.for_tasks(encoder, tasks)
    trainable = spec.get("trainable", "all")
    if trainable in ("heads", "cached"):
        train_only(model, "heads")
    elif trainable != "all":
        train_only(model, *top_groups(model, int(trainable)), "heads")  # k <= layers: transformer layers only
    clock = StepClock()
    started = time.perf_counter()
    trainer = Trainer(model, tok, tasks, config_for(spec, trainable), callbacks=[clock])
    for task in trainer.tasks:
        trainer.data.rows(task, "train")  # tokenized (or embedded, for cached features) here, not in the first step
    setup_seconds = time.perf_counter() - started
    k = trainable_layers(trainable, model.encoder.config.num_hidden_layers)
    return Run(trainer, clock, setup_seconds, k, trainable == "cached")


def steps_per_epoch(trainer: Trainer) -> int:
    """Batches per epoch over the trainer's tasks: what `fit` computes from its loaders."""
    return sum(math.ceil(len(trainer.data.rows(t, "train")) / trainer.config.batch_size) for t in trainer.tasks)


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------ public-API instruments
class StepClock(Callback):
    """Stamps the start of a fit and the end of every step (at order 0: after the history, peak memory,
    progress bar and evaluation; before gradual unfreezing).

    On a GPU the host runs ahead of the device, so the clock synchronises only at `marks` (steps in
    the fit, e.g. the end of the warm-up and of each repetition): the steps in between run exactly as
    in the book, and the time between two marks is the device's time for those steps.
    """

    def __init__(self) -> None:
        self.marks: set[int] | None = None  # None: every step
        self.start = 0.0
        self.stamps: list[float] = []

    def on_fit_start(self, trainer) -> None:
        synchronize(trainer.device)
        self.stamps = []
        self.start = time.perf_counter()

    def on_step_end(self, trainer, step: dict) -> None:
        if self.marks is None or trainer.step_in_fit in self.marks:
            synchronize(trainer.device)
        self.stamps.append(time.perf_counter())

    def at(self, step: int) -> float:
        """The time at the end of `step` (1-based) of the fit; step 0 is its start."""
        return self.start if step == 0 else self.stamps[step - 1]


class BatchShapes:
    """What each training forward saw: task, batch size, padded length, real tokens (a forward
    pre-hook on a MultiTaskModel; real-token counts stay on the device until read, no sync per step)."""

    def __init__(self, model: MultiTaskModel):
        self.model, self.rows, self.masks = model, [], []

    def __enter__(self) -> "BatchShapes":
        # run eagerly even inside a compiled forward (TrainConfig(compile=True)): the hook only counts
        self.handle = self.model.register_forward_pre_hook(torch.compiler.disable(self.hook))
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def hook(self, module, args) -> None:
        if not module.training:
            return
        task, batch = args[0], args[1]
        if "input_ids" in batch:
            ids = batch["input_ids"]
            self.rows.append((task, int(ids.shape[0]), int(ids.shape[1])))
            self.masks.append(batch["attention_mask"].sum())
        else:  # cached features: no tokens
            self.rows.append((task, int(batch["labels"].shape[0]), 0))
            self.masks.append(None)

    def real_tokens(self, start: int, stop: int) -> int:
        masks = [m for m in self.masks[start:stop] if m is not None]
        return int(torch.stack(masks).sum()) if masks else 0


def step_rows(shapes: BatchShapes, model: MultiTaskModel, k: int, cached: bool) -> list[dict]:
    encoder_config = model.encoder.config
    return [
        {
            "examples": size,
            "padded_tokens": size * length,
            "flops": step_flops(encoder_config, size, length, k, model.head(task).num_labels, backbone=not cached),
        }
        for task, size, length in shapes.rows
    ]


def windows(
    clock_at, rows: list[dict], warmup: int, reps: int, steps: int, shapes: BatchShapes | None = None
) -> list[dict]:
    """Per repetition: seconds, examples, padded and real tokens, model FLOPs."""
    out = []
    for r in range(reps):
        a, b = warmup + r * steps, warmup + (r + 1) * steps
        chunk = rows[a:b]
        out.append(
            {
                "seconds": clock_at(b) - clock_at(a),
                "examples": sum(c["examples"] for c in chunk),
                "padded_tokens": sum(c["padded_tokens"] for c in chunk),
                "flops": sum(c["flops"] for c in chunk),
                "real_tokens": shapes.real_tokens(a, b) if shapes else 0,
            }
        )
    return out


def summarize(per_rep: list[dict], steps: int, cached: bool = False) -> dict:
    eps = [p["examples"] / p["seconds"] for p in per_rep]
    fps = [p["flops"] / p["seconds"] for p in per_rep]
    total = sum(p["examples"] for p in per_rep)
    return {
        "examples_per_s": statistics.median(eps),
        "examples_per_s_reps": eps,
        "seconds_per_step": statistics.median(p["seconds"] / steps for p in per_rep),
        "flops_per_s": statistics.median(fps),
        "flops_per_example": sum(p["flops"] for p in per_rep) / total,
        "mean_padded_len": 0.0 if cached else sum(p["padded_tokens"] for p in per_rep) / total,
        "mean_real_len": 0.0 if cached else sum(p["real_tokens"] for p in per_rep) / total,
    }


def timed_fit(run: Run, warmup: int, reps: int, steps: int) -> dict:
    """`warmup` steps, then `reps` repetitions of `steps` steps: one real `trainer.fit` of that many steps."""
    trainer, clock = run.trainer, run.clock
    total = warmup + reps * steps
    per_epoch = steps_per_epoch(trainer)
    clock.marks = {warmup + r * steps for r in range(reps + 1)}
    rss_before = rss_mb()
    with BatchShapes(trainer.model) as shapes:
        trainer.fit(total / per_epoch)  # fit runs round(epochs * steps per epoch) = total steps
    if len(clock.stamps) != total or trainer.steps_per_epoch != per_epoch:
        raise RuntimeError(
            f"the fit ran {len(clock.stamps)} steps of {trainer.steps_per_epoch} per epoch; expected {total} of "
            f"{per_epoch}"
        )
    rows = step_rows(shapes, trainer.model, run.k, run.cached)
    out = summarize(windows(clock.at, rows, warmup, reps, steps, shapes), steps, run.cached)
    out.update(
        warmup_steps=warmup,
        reps=reps,
        steps_per_rep=steps,
        trainable_layers=run.k,
        trainable_params=trainable_params(trainer.model),
        fit_peak_memory_mb=round(trainer.peak_memory_mb, 1),
        memory_method_fit=trainer.memory_method,
        rss_growth_mb=round(max(0.0, trainer.peak_memory_mb - rss_before), 1) if not is_cuda(trainer.device) else None,
        train_seconds=trainer.train_seconds,
    )
    return out


# ------------------------------------------------------------------------------ CPU scenarios
def run_train(spec: dict) -> dict:
    run = build(spec)
    trainer = run.trainer
    n_train = sum(len(trainer.data.rows(t, "train")) for t in trainer.tasks)
    steps = spec["steps"]
    if steps == "epoch":
        steps = steps_per_epoch(trainer)
    out = timed_fit(run, spec["warmup"], spec["reps"], steps)
    out.update(
        setup_seconds=run.setup_seconds,
        train_rows=n_train,
        epoch_seconds=n_train / out["examples_per_s"],
        steps_per_epoch=steps_per_epoch(trainer),
    )
    return out


def run_sweep(spec: dict) -> dict:
    return {"by_k": {str(k): run_train({**spec, "trainable": k}) for k in spec["ks"]}}


def padding_stats(spec: dict) -> dict:
    """Real / padded tokens over one epoch of batches, per padding mode (collation only, no model):
    the package's loaders (`make_loader`, length buckets from the trainer's data) and `multitask_stream`."""
    out = {}
    for name, padding, bucket in (
        ("dynamic", "longest", False),
        ("bucketed", "longest", True),
        ("max_length", "max_length", False),
    ):
        trainer = build({**spec, "padding": padding, "bucket": bucket, "trainable": "heads"}).trainer
        generator = torch.Generator().manual_seed(spec.get("seed", 0))
        loaders = {}
        for task in trainer.tasks:
            rows = trainer.data.rows(task, "train")
            lengths = trainer.data.lengths(rows) if bucket else None
            loaders[task] = make_loader(
                rows, trainer.data.collator(task), trainer.config.batch_size, True, generator, lengths
            )
        stream = multitask_stream(
            loaders, trainer.config.sampling, trainer.config.temperature, np.random.default_rng(spec.get("seed", 0))
        )
        real = padded = 0
        for _ in range(steps_per_epoch(trainer)):
            _, batch = next(stream)
            real += int(batch["attention_mask"].sum())
            padded += batch["input_ids"].numel()
        out[name] = {"real_tokens": real, "padded_tokens": padded, "useful_fraction": real / padded}
    return out


def run_bf16(spec: dict) -> dict:
    """Identical short full fine-tuning runs (same seed, same batches) in fp32 and with
    TrainConfig(precision="bf16")."""
    out = {}
    for precision in ("fp32", "bf16"):
        run = build({**spec, "trainable": "all", "precision": precision})
        timing = timed_fit(run, spec["warmup"], spec["reps"], spec["steps"])
        metrics = {t: r for t, r in run.trainer.evaluate_outcomes("validation").items()}
        out[precision] = {
            **timing,
            "eval_seconds": sum(r.seconds for r in metrics.values()),
            "validation_accuracy": {t: r.metrics["accuracy"] for t, r in metrics.items()},
            "final_loss": float(np.mean([s["loss"] for s in run.trainer.history.steps[-10:]])),
        }
    return out


def run_inference(spec: dict) -> dict:
    """Frozen-encoder throughput: model.embed in eval mode without gradients, fp32 and bf16 autocast (the
    precisions the spec names: bf16 only where the CPU has it natively)."""
    run = build({**spec, "trainable": "heads"})
    trainer = run.trainer
    model, device = trainer.model.eval(), trainer.device
    rows, task = [], None
    for name in trainer.tasks:
        rows += trainer.data.rows(name, "train")[: spec["rows"]]
        task = trainer.tasks[name]
    collate = make_collator(task, trainer.tokenizer, "longest", trainer.config.max_length)
    bs = spec["eval_batch_size"]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # as the package's evaluation orders them
    batches = [collate([rows[i] for i in order[s : s + bs]]) for s in range(0, len(rows), bs)]
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    out = {}
    for precision in spec.get("precisions", ("fp32", "bf16")):
        ctx = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if precision == "bf16"
            else contextlib.nullcontext
        )
        times = []
        with torch.no_grad():
            for _ in range(spec["reps"] + 1):
                synchronize(device)
                started = time.perf_counter()
                for b in batches:
                    with ctx():
                        model.embed(b)
                synchronize(device)
                times.append(time.perf_counter() - started)
        times = times[1:]  # first pass is warm-up
        flops = sum(
            forward_flops(model.encoder.config, b["input_ids"].shape[0], b["input_ids"].shape[1]) for b in batches
        )
        t = statistics.median(times)
        out[precision] = {
            "examples_per_s": len(rows) / t,
            "flops_per_s": flops / t,
            "rows": len(rows),
            "batch_size": bs,
        }
    return out


def run_hf(spec: dict) -> dict:
    """Single-task full fine-tuning: the package's Trainer against transformers.Trainer on the same work."""
    ours = run_train({**spec, "trainable": "all"})
    try:
        hf = run_hf_trainer(spec, max_steps=spec["warmup"] + spec["reps"] * spec["steps"])
    except ImportError as err:
        return {"ours": ours, "hf": None, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    return {"ours": ours, "hf": hf}


def hf_sampling_args(bucket: bool) -> dict:
    """Length-grouped batches in transformers.Trainer, in the spelling this version understands."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    if bucket and "train_sampling_strategy" in names:
        return {"train_sampling_strategy": "group_by_length"}
    if bucket and "group_by_length" in names:
        return {"group_by_length": True}
    return {}


def run_hf_trainer(spec: dict, max_steps: int | None = None) -> dict:
    """transformers.Trainer on the first task, full fine-tuning of the same model (wrapped to return
    {'loss': ...}), timed by a TrainerCallback with the same marks; `max_steps` None: one epoch."""
    import transformers
    from torch import nn
    from transformers import Trainer as HFTrainer
    from transformers import TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    set_matmul_precision(spec)
    task = load_tasks(spec)[0]
    tok, encoder = tokenizer_and_encoder(spec)
    model = MultiTaskModel.for_tasks(encoder, [task])
    device = spec.get("device", "cpu")

    class Wrapped(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
            batch = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                batch["token_type_ids"] = token_type_ids
            logits = self.inner(task.name, batch)
            return {"loss": nn.functional.cross_entropy(logits.float(), labels), "logits": logits}

    rows = encode_rows(task, task.splits["train"], tok, 128)
    bs = spec["batch_size"]
    total = max_steps or math.ceil(len(rows) / bs)
    warmup = spec["warmup"]
    if total <= warmup:
        raise ValueError(f"{total} steps at batch {bs}: nothing left to time after {warmup} warm-up steps")
    reps, steps = (spec["reps"], spec["steps"]) if max_steps else (1, total - warmup)
    marks = {warmup + r * steps for r in range(reps + 1)}
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                synchronize(device)
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            if state.global_step in marks:
                synchronize(device)
            stamps.append(time.perf_counter())

    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats()
    sampling = hf_sampling_args(spec.get("bucket", True))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=bs,
            learning_rate=5e-5,
            weight_decay=0.01,
            max_grad_norm=1.0,
            lr_scheduler_type="constant",
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            dataloader_num_workers=0,
            use_cpu=not is_cuda(device),
            disable_tqdm=True,
            seed=spec.get("seed", 0),
            bf16=spec.get("precision") == "bf16",
            torch_compile=bool(spec.get("compile")),
            **({"max_steps": max_steps} if max_steps else {"num_train_epochs": 1}),
            **sampling,
        )  # optim: Hugging Face's default (fused AdamW); pinned memory: its default on a GPU
        trainer = HFTrainer(
            model=Wrapped(model),
            args=args,
            train_dataset=rows,
            data_collator=make_collator(task, tok, "longest", 128),
            callbacks=[Clock()],
        )
        trainer.remove_callback(PrinterCallback)  # no log lines on stdout
        with BatchShapes(model) as shapes:
            trainer.train()
    if len(stamps) != total + 1:
        raise RuntimeError(f"transformers.Trainer ran {len(stamps) - 1} steps, expected {total}")
    rows_ = step_rows(shapes, model, model.encoder.config.num_hidden_layers, False)
    per_rep = windows(lambda i: stamps[i], rows_, warmup, reps, steps, shapes)
    out = summarize(per_rep, steps)
    out.update(
        transformers=transformers.__version__,
        steps=total,
        epoch_seconds=stamps[-1] - stamps[0],
        peak_memory_mb=round(torch.cuda.max_memory_allocated() / 2**20, 1) if is_cuda(device) else None,
        optim=str(args.optim),
        sampling="length-grouped" if sampling else "random",
    )
    return out


class PhaseClock(Callback):
    """Where a step's time goes, from public hooks: the model's forward pre-hook and hook, the
    parameters' post-accumulate-grad hooks (the last one ends the backward), and the optimizer's
    step pre- and post-hooks. Host times everywhere; on a GPU also CUDA events (no synchronisation),
    whose gaps are the device's time per phase."""

    PHASES = ("data", "forward", "loss+backward", "clip+checks", "optimizer", "after the update")
    MARKS = ("forward_start", "forward_end", "backward_end", "optimizer_start", "optimizer_end")

    def __init__(self, trainer: Trainer):
        self.cuda = is_cuda(trainer.device)
        self.host: list[list[float]] = []
        self.events: list[list] = []
        model = trainer.model
        self.active = False
        eager = torch.compiler.disable
        self.handles = [
            model.register_forward_pre_hook(eager(lambda m, a: self.mark("forward_start"))),
            model.register_forward_hook(eager(lambda m, a, o: self.mark("forward_end"))),
            trainer.optimizer.register_step_pre_hook(lambda o, a, k: self.mark("optimizer_start")),
            trainer.optimizer.register_step_post_hook(lambda o, a, k: self.mark("optimizer_end")),
        ]
        self.handles += [
            p.register_post_accumulate_grad_hook(lambda p: self.mark("backward_end"))
            for p in model.parameters()
            if p.requires_grad
        ]
        self.current: dict = {}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def stamp(self):
        event = None
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
        return time.perf_counter(), event

    def mark(self, name: str) -> None:
        if self.active:
            self.current[name] = self.stamp()  # backward_end: overwritten by each parameter, the last one stays

    def on_fit_start(self, trainer) -> None:
        self.active = True
        self.previous = self.stamp()

    def on_step_end(self, trainer, step: dict) -> None:
        end = self.stamp()
        points = [self.previous, *[self.current[m] for m in self.MARKS], end]
        self.host.append([b[0] - a[0] for a, b in zip(points, points[1:])])
        if self.cuda:
            self.events.append([(a[1], b[1]) for a, b in zip(points, points[1:])])
        self.previous, self.current = end, {}

    def on_fit_end(self, trainer) -> None:
        self.active = False

    def table(self, skip: int) -> dict:
        host = [statistics.median(col) for col in zip(*self.host[skip:])]
        out = {"phase_seconds": dict(zip(self.PHASES, host)), "host_step_seconds": sum(host)}
        out["phase_share"] = {k: v / (sum(host) or 1) for k, v in out["phase_seconds"].items()}
        if self.cuda:
            torch.cuda.synchronize()
            device = [statistics.median(a.elapsed_time(b) / 1000 for a, b in col) for col in zip(*self.events[skip:])]
            out["device_phase_seconds"] = dict(zip(self.PHASES, device))
            out["device_step_seconds"] = sum(device)
        return out


def run_profile(spec: dict) -> dict:
    """Where a full fine-tuning step's time goes: phases from public hooks around a real fit, and
    torch.profiler's top operators (self CPU time; on a GPU, self device time and the busy share)."""
    from torch.profiler import ProfilerActivity, profile

    run = build({**spec, "trainable": "all"})
    trainer = run.trainer
    per_epoch = steps_per_epoch(trainer)
    phases = PhaseClock(trainer)
    trainer.callbacks.append(phases)
    trainer.fit((spec["warmup"] + spec["steps"]) / per_epoch)
    trainer.callbacks.remove(phases)
    phases.remove()
    out = phases.table(spec["warmup"])
    cuda = is_cuda(trainer.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    n = spec["profile_steps"]
    with profile(activities=activities) as prof:
        synchronize(trainer.device)
        started = time.perf_counter()
        trainer.fit(n / per_epoch)
        synchronize(trainer.device)
        wall = time.perf_counter() - started
    table = prof.key_averages()

    def cpu_self(e):
        return e.self_cpu_time_total

    def dev_self(e):
        return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))

    def on_cpu(e):
        return str(getattr(e, "device_type", "CPU")).endswith("CPU")

    ops = [
        e for e in table if on_cpu(e)
    ]  # operators (aten::mm, ...); on a GPU each holds the device time of its own kernels
    key = dev_self if cuda else cpu_self
    total_self = sum(key(e) for e in ops) or 1
    top = sorted(ops, key=key, reverse=True)[:10]
    out["top_ops"] = [
        {
            "op": e.key,
            "self_ms_per_step": key(e) / 1000 / n,
            "share": key(e) / total_self,
            "calls_per_step": e.count / n,
            "self_cpu_ms_per_step": cpu_self(e) / 1000 / n,
        }
        for e in top
    ]
    out["top_ops_time"] = "self device (GPU) time of each operator's kernels" if cuda else "self CPU time"
    out["profiled_steps"] = n
    out["profiled_wall_seconds_per_step"] = wall / n
    if cuda:  # the kernels themselves, as the profiler's own table sums them
        kernels = [e for e in table if not on_cpu(e) and not getattr(e, "is_user_annotation", False)]
        busy = sum(dev_self(e) for e in kernels) / 1e6
        out["device_busy_fraction"] = busy / wall
        out["kernel_launches_per_step"] = sum(e.count for e in kernels) / n
        out["top_kernels"] = [
            {
                "kernel": e.key[:120],
                "self_ms_per_step": dev_self(e) / 1000 / n,
                "share": dev_self(e) / (busy * 1e6 or 1),
                "calls_per_step": e.count / n,
            }
            for e in sorted(kernels, key=dev_self, reverse=True)[:5]
        ]
    out.update(
        batch_size=spec["batch_size"],
        precision=spec.get("precision", "fp32"),
        device=str(trainer.device),
        synchronised="phases: CUDA events, no host synchronisation" if cuda else "CPU: host times are the work",
    )
    return out


def run_matmul(spec: dict) -> dict:
    set_matmul_precision(spec)
    dtypes = tuple(spec.get("dtypes", ("fp32", "bf16")))
    return matmul_flops(tuple(spec["sizes"]), dtypes, reps=spec["reps"], device=spec.get("device", "cpu"))


# ------------------------------------------------------------------------------ the GPU section
def run_compare(spec: dict) -> dict:
    """One epoch of full fine-tuning on the first task, by this package's Trainer ('ours') or by
    transformers.Trainer ('hf'), timed after `warmup` steps (synchronised at the two marks only)."""
    if spec["loop"] == "hf":
        return run_hf_trainer(spec)
    run = build({**spec, "trainable": "all"})
    trainer = run.trainer
    total = steps_per_epoch(trainer)
    warmup = spec["warmup"]
    if total <= warmup:
        raise ValueError(
            f"one epoch is {total} steps at batch {spec['batch_size']}: nothing left to time after {warmup} warm-up "
            "steps"
        )
    out = timed_fit(run, warmup, 1, total - warmup)  # peak memory: the trainer's PeakMemory callback
    out.update(
        steps=total,
        epoch_seconds=run.clock.at(total) - run.clock.at(0),
        setup_seconds=run.setup_seconds,
        peak_memory_mb=out["fit_peak_memory_mb"],
        sync_every=trainer.config.sync_every,
        pin_memory=trainer.pin_memory,
        compile=bool(spec.get("compile")),
        bucket_by_length=trainer.config.bucket_by_length,
        fused_adamw=bool(trainer.optimizer.defaults.get("fused")),
        tf32=torch.get_float32_matmul_precision() != "highest",
    )
    return out


def run_eval_batches(spec: dict) -> dict:
    """trainer.evaluate_outcomes on the training rows (the largest split at hand) per eval batch size;
    the time is the package's own scoring time (TaskEvaluation.seconds)."""
    tasks = load_tasks(spec)
    set_matmul_precision(spec)
    tok, encoder = tokenizer_and_encoder(spec)
    model = MultiTaskModel.for_tasks(encoder, tasks)
    out = {}
    for size in spec["eval_batch_sizes"]:
        trainer = Trainer(model, tok, tasks, config_for({**spec, "eval_batch_size": size}))
        task = next(iter(trainer.tasks))
        trainer.data.rows(task, "train")
        trainer.evaluate_outcomes("validation")  # warm-up: kernels, allocator
        result = trainer.evaluate_outcomes("train")[task]
        out[str(size)] = {
            "examples_per_s": result.examples / result.seconds,
            "seconds": result.seconds,
            "examples": result.examples,
        }
    return out


KINDS = {
    "train": run_train,
    "sweep": run_sweep,
    "padding_stats": padding_stats,
    "bf16": run_bf16,
    "inference": run_inference,
    "hf": run_hf,
    "profile": run_profile,
    "matmul": run_matmul,
    "compare": run_compare,
    "eval_batches": run_eval_batches,
}


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
