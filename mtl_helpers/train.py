"""The multi-task training loop: task sampling, loss weights, per-task evaluation, history,
cached features for a frozen backbone, and the audits that frozen means frozen."""
from __future__ import annotations

import contextlib
import io
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import psutil
import torch
import torch.nn.functional as F
from seqeval.metrics import f1_score as entity_f1_score
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader, default_collate
from tqdm.std import tqdm
from transformers import PreTrainedTokenizerBase, set_seed

from .data import TaskData, encode_rows, make_collator, task_schedule
from .encoder import DEFAULT_MODEL_ID, default_model_path
from .errors import MTLError, TrainingDiverged
from .groups import count_trainable, freeze, layer_groups, resolve_groups, unfreeze
from .model import MultiTaskModel
from .optim import audit_optimizer, constant_schedule, discriminative_param_groups, discriminative_rates, lr_table, param_groups_for, slanted_triangular
from .results import atomic_write_bytes

PRIMARY_METRIC = {"sentence": "accuracy", "token": "entity_f1"}


@dataclass
class TrainConfig:
    """Everything a run depends on; `lr` is the heads' rate, lower groups get lr / factor**depth."""

    epochs: float = 1
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 1e-3
    factor: float = 1.0
    backbone_lr: float | None = None
    weight_decay: float = 0.01
    schedule: str = "slanted"  # "slanted" (ULMFiT) or "constant"
    cut_frac: float = 0.1
    ratio: float = 32.0
    max_grad_norm: float | None = 1.0
    sampling: str = "proportional"  # "proportional", "round_robin" or "temperature"
    temperature: float = 2.0
    loss_weights: dict[str, float] | None = None
    max_length: int = 128
    padding: str = "longest"  # dynamic padding; "max_length" pads every batch to max_length
    bucket_by_length: bool = False
    cache_features: bool = False
    precision: str = "fp32"  # "bf16": autocast forward and loss; weights and optimizer stay fp32
    eval_train: bool = True  # also score a slice of the training set: the train/validation gap
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    checkpoint_path: str | None = None

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs > 0,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1,
            "lr": self.lr > 0,
            "factor": self.factor > 0,
            "weight_decay": self.weight_decay >= 0,
            "max_length": self.max_length >= 2,
            "schedule": self.schedule in ("slanted", "constant"),
            "sampling": self.sampling in ("proportional", "round_robin", "temperature"),
            "padding": self.padding in ("longest", "max_length"),
            "precision": self.precision in ("fp32", "bf16"),
            "device": self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"Invalid TrainConfig value(s): {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}.")


@dataclass
class History:
    """Per-step losses and learning rates, and per-epoch metrics of every task and split."""

    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    interrupted: bool = False

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.evals)

    def step_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: v for k, v in s.items() if k != "lr"} for s in self.steps])

    def lr_frame(self) -> pd.DataFrame:
        """Learning rate of each optimizer group (columns) at each step (rows)."""
        return pd.DataFrame([s["lr"] for s in self.steps], index=[s["step"] for s in self.steps])

    def final(self, split: str = "validation") -> dict[str, dict]:
        """The latest metrics of each task on `split`."""
        out: dict[str, dict] = {}
        for record in self.evals:
            if record["split"] == split:
                out[record["task"]] = {k: v for k, v in record.items() if k not in ("task", "split")}
        return out


class PeakMemory:
    """Peak memory in MB during a block: CUDA's allocator peak, or the process RSS sampled on CPU."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device, self.interval, self.peak_mb = device, interval, 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._process = psutil.Process()
        self._base = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.peak_mb = (self._peak - self._base) / 2**20  # growth over the start: the run's own memory


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def model_label(model: MultiTaskModel) -> str:
    """A portable model name for records: never a local folder path."""
    source = str(getattr(model.encoder.config, "name_or_path", "") or type(model.encoder).__name__)
    if source == default_model_path():
        return DEFAULT_MODEL_ID
    return source.rstrip("/").split("/")[-1] if source.startswith("/") else source


def _metrics(task: TaskData, preds: list, golds: list, loss: float) -> dict:
    if task.level == "sentence":
        return {
            "accuracy": accuracy_score(golds, preds),
            "macro_f1": f1_score(golds, preds, average="macro", labels=range(len(task.label_names)), zero_division=0),
            "loss": loss,
        }
    names = task.label_names
    gold_tags = [[names[g] for g in seq] for seq in golds]
    pred_tags = [[names[p] for p in seq] for seq in preds]
    flat_gold = [g for seq in golds for g in seq]
    flat_pred = [p for seq in preds for p in seq]
    return {
        "entity_f1": entity_f1_score(gold_tags, pred_tags, zero_division=0),
        "token_accuracy": accuracy_score(flat_gold, flat_pred),
        "loss": loss,
    }


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW as one fused kernel where torch has one (CPU and CUDA float32): several times faster
    than the per-tensor default on MiniLM's 22.7M parameters; the default elsewhere."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


class Trainer:
    """Trains a MultiTaskModel on several tasks at once; freezing lives in the optimizer's groups.

    Callbacks are called as `callback(trainer, event, info)` with event "step" or "epoch".
    """

    def __init__(
        self,
        model: MultiTaskModel,
        tokenizer: PreTrainedTokenizerBase,
        tasks: Iterable[TaskData],
        config: TrainConfig | None = None,
        callbacks: Iterable[Callable] = (),
    ):
        self.config = config or TrainConfig()
        self.model, self.tokenizer = model, tokenizer
        self.tasks = {t.name: t for t in tasks}
        if not self.tasks:
            raise MTLError("Trainer needs at least one task.")
        self._check_heads()
        self.callbacks = list(callbacks)
        self.device = pick_device(self.config.device)
        set_seed(self.config.seed)
        self.model.to(self.device)
        self._generator = torch.Generator().manual_seed(self.config.seed)
        self._rng = np.random.default_rng(self.config.seed)
        self.rates = discriminative_rates(model, self.config.lr, self.config.factor, self.config.backbone_lr)
        self.history = History()
        self.optimizer: torch.optim.Optimizer | None = None
        self.train_seconds = 0.0
        self.examples_seen = 0
        self.peak_memory_mb = 0.0
        self.global_step = 0
        self.epochs_done = 0.0
        self._best_score = -math.inf
        self._features: dict[str, dict[str, list[dict]]] = {}
        self._train_eval_ids: dict[str, list[int]] = {}
        self._data = {name: self._prepare(task) for name, task in self.tasks.items()}
        if self.config.cache_features:
            for name in self.tasks:
                self._rows(name, "train")
        self._collate = {
            name: default_collate if self.config.cache_features else make_collator(task, tokenizer, self.config.padding, self.config.max_length)
            for name, task in self.tasks.items()
        }
        self._build_optimizer()

    # -------------------------------------------------------------------------- set-up
    def _check_heads(self) -> None:
        for name, task in self.tasks.items():
            head = self.model.head(name)
            if head.level != task.level or head.num_labels != len(task.label_names):
                raise MTLError(
                    f"Head {name!r} is a {head.level} head with {head.num_labels} classes, but task {name!r} is "
                    f"{task.level}-level with {len(task.label_names)} labels. Build the model with MultiTaskModel.for_tasks."
                )

    def _prepare(self, task: TaskData) -> dict[str, list[dict]]:
        splits = dict(task.splits)
        if self.config.eval_train:  # a fixed slice of train, as large as validation, for the gap
            n = min(len(splits["train"]), len(splits["validation"]))
            self._train_eval_ids[task.name] = sorted(np.random.default_rng(0).permutation(len(splits["train"]))[:n].tolist())
            splits["train_eval"] = [splits["train"][i] for i in self._train_eval_ids[task.name]]
        encoded = {s: encode_rows(task, rows, self.tokenizer, self.config.max_length) for s, rows in splits.items()}
        if self.config.cache_features:
            if task.level != "sentence":
                raise MTLError(f"cache_features works for sentence tasks only; {task.name!r} is token-level.")
            backbone = layer_groups(self.model)
            trainable = [n for n in resolve_groups(self.model, "backbone") if backbone[n].trainable]
            if trainable:
                raise MTLError(f"cache_features needs a frozen backbone, but {trainable} are trainable. Call freeze(model, 'backbone') first.")
        return encoded

    def _rows(self, task: str, split: str) -> list[dict]:
        """Tokenized rows, or with cache_features their sentence embeddings, computed on first use."""
        if not self.config.cache_features:
            return self._data[task][split]
        cache = self._features.setdefault(task, {})
        if split not in cache:
            if split == "train_eval":  # the same sentences as part of train: reuse their features
                train = self._rows(task, "train")
                cache[split] = [train[i] for i in self._train_eval_ids[task]]
            else:
                cache[split] = self._embed(self.tasks[task], self._data[task][split])
        return cache[split]

    @torch.no_grad()
    def _embed(self, task: TaskData, rows: list[dict]) -> list[dict]:
        """Sentence embeddings of the frozen backbone, computed once (eval mode, so exact)."""
        was_training = self.model.training
        self.model.eval()
        collate = make_collator(task, self.tokenizer, "longest", self.config.max_length)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # similar lengths: little padding
        features = [None] * len(rows)
        for start in range(0, len(order), self.config.eval_batch_size):
            ids = order[start : start + self.config.eval_batch_size]
            batch = collate([rows[i] for i in ids])
            for i, f in zip(ids, self.model.embed(_to(batch, self.device)).cpu()):
                features[i] = {"features": f, "labels": rows[i]["labels"]}
        self.model.train(was_training)
        return features

    def _build_optimizer(self) -> None:
        groups = discriminative_param_groups(self.model, self.config.lr, self.config.factor, self.config.weight_decay, self.config.backbone_lr)
        self.optimizer = _adamw(groups, self.config.lr) if groups else None
        self.audit()

    def audit(self) -> None:
        """Every trainable parameter in exactly one optimizer group, no frozen one in any."""
        if self.optimizer is None:
            if count_trainable(self.model):
                raise MTLError("Parameters are trainable but no optimizer exists; call Trainer.unfreeze to add them.")
            return
        audit_optimizer(self.model, self.optimizer)

    def unfreeze(self, *names: str) -> list[str]:
        """Unfreeze groups and add exactly their parameters to the optimizer, at their own rates."""
        chosen = unfreeze(self.model, *names)
        if self.config.cache_features and any(not n.startswith("head.") for n in chosen):
            raise MTLError("This trainer trains on cached features, so the backbone must stay frozen.")
        if self.optimizer is None:
            self._build_optimizer()
            return chosen
        held = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        for group in param_groups_for(self.model, chosen, self.rates, self.config.weight_decay):
            group["params"] = [p for p in group["params"] if id(p) not in held]
            if group["params"]:
                group["initial_lr"] = group["lr"]
                self.optimizer.add_param_group(group)
        self.audit()
        return chosen

    def freeze(self, *names: str) -> list[str]:
        """Freeze groups and take their parameters (and Adam state) out of the optimizer."""
        chosen = freeze(self.model, *names)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if not p.requires_grad:
                        self.optimizer.state.pop(p, None)
                group["params"] = [p for p in group["params"] if p.requires_grad]
            self.optimizer.param_groups[:] = [g for g in self.optimizer.param_groups if g["params"]]
            if not self.optimizer.param_groups:
                self.optimizer = None
        self.audit()
        return chosen

    # -------------------------------------------------------------------------- training
    def _loader(self, task: str, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        rows = self._rows(task, split)
        sampler = None
        if shuffle and self.config.bucket_by_length and not self.config.cache_features:
            from transformers.trainer_pt_utils import LengthGroupedSampler

            sampler = LengthGroupedSampler(batch_size, lengths=[len(r["input_ids"]) for r in rows], generator=self._generator)
        return DataLoader(
            rows, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
            # evaluation gets its own generator: a DataLoader draws a seed from it on every pass
            generator=self._generator if shuffle else torch.Generator().manual_seed(0), collate_fn=self._collate[task],
        )

    def _loss(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.model(task, batch)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1), ignore_index=-100)
        weights = self.config.loss_weights or {}
        return loss * weights.get(task, 1.0)

    def fit(self, epochs: float | None = None, tasks: Iterable[str] | None = None, stage: str = "") -> History:
        """Train for `epochs` (fractions allowed) on `tasks` (default: all), evaluating each epoch."""
        if self.optimizer is None:
            raise MTLError("Nothing is trainable: every group is frozen. Unfreeze a group (trainer.unfreeze('heads')) or only call evaluate().")
        self.audit()
        epochs = self.config.epochs if epochs is None else epochs
        per_epoch, stream = self.train_batches(tasks)
        steps_per_epoch = sum(per_epoch.values())
        total = max(1, round(epochs * steps_per_epoch))
        scheduler = (
            slanted_triangular(self.optimizer, total, self.config.cut_frac, self.config.ratio)
            if self.config.schedule == "slanted" else constant_schedule(self.optimizer)
        )
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        bar = tqdm(total=total, desc=stage or "training", disable=not self.config.progress, mininterval=2, ncols=90, leave=False)
        step_in_fit = 0
        try:
            with PeakMemory(self.device) as memory:
                while step_in_fit < total:
                    task, batch = next(stream)
                    started = time.perf_counter()
                    self._step(task, _to(batch, self.device), trainable, scheduler)
                    self.train_seconds += time.perf_counter() - started
                    self.examples_seen += len(batch["labels"])
                    step_in_fit += 1
                    bar.update()
                    if step_in_fit % steps_per_epoch == 0 or step_in_fit == total:
                        self.epochs_done += (step_in_fit % steps_per_epoch or steps_per_epoch) / steps_per_epoch
                        self._end_epoch(stage)
            self.peak_memory_mb = max(self.peak_memory_mb, memory.peak_mb)
        except KeyboardInterrupt:
            self.history.interrupted = True
            warnings.warn(f"Training interrupted at step {self.global_step}; the history so far is kept" + (" and the best checkpoint is saved." if self.config.checkpoint_path else "."))
        finally:
            bar.close()
        return self.history

    def _autocast(self):
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_batches(self, tasks: Iterable[str] | None = None) -> tuple[dict[str, int], Iterator[tuple[str, dict]]]:
        """Batches per epoch of each task, and the endless stream of (task, batch) that fit trains on."""
        train_tasks = list(tasks) if tasks is not None else list(self.tasks)
        for name in train_tasks:
            if name not in self.tasks:
                raise MTLError(f"Task {name!r} is not one of this trainer's tasks {list(self.tasks)}.")
        loaders = {t: self._loader(t, "train", True, self.config.batch_size) for t in train_tasks}
        per_epoch = {t: len(loader) for t, loader in loaders.items()}
        return per_epoch, self._stream(loaders, per_epoch)

    def _stream(self, loaders: dict[str, DataLoader], per_epoch: dict[str, int]) -> Iterator[tuple[str, dict]]:
        iterators = {t: iter(loader) for t, loader in loaders.items()}
        schedule: list[str] = []
        while True:
            if not schedule:  # one epoch's task order at a time
                schedule = task_schedule(per_epoch, self.config.sampling, self.config.temperature, self._rng)
            task = schedule.pop(0)
            try:
                batch = next(iterators[task])
            except StopIteration:  # this task's data ran out before the epoch's schedule did
                iterators[task] = iter(loaders[task])
                batch = next(iterators[task])
            yield task, batch

    def _step(self, task: str, batch: dict[str, torch.Tensor], trainable: list, scheduler) -> None:
        with self._autocast():
            loss = self._loss(task, batch)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"The loss became {loss.item()} at step {self.global_step + 1} (task {task!r}); the model keeps its "
                f"state from step {self.global_step}. Lower the learning rate or check the inputs."
            )
        loss.backward()
        if self.config.max_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(trainable, self.config.max_grad_norm)
            if not torch.isfinite(norm):
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingDiverged(
                    f"The gradient norm became {norm.item()} at step {self.global_step + 1} (task {task!r}); the model "
                    f"keeps its state from step {self.global_step}. Lower the learning rate."
                )
        rates = lr_table(self.optimizer)  # the rates this step uses, before the schedule moves on
        self.optimizer.step()
        scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        record = {"step": self.global_step, "task": task, "loss": loss.item(), "lr": rates}
        self.history.steps.append(record)
        for callback in self.callbacks:
            callback(self, "step", record)

    def _end_epoch(self, stage: str) -> None:
        splits = ["validation"] + (["train_eval"] if self.config.eval_train else [])
        scores = []
        for split in splits:
            for task, metrics in self.evaluate(split).items():
                self.history.evals.append({"epoch": round(self.epochs_done, 4), "step": self.global_step, "stage": stage, "task": task, "split": split.replace("train_eval", "train"), **metrics})
                if split == "validation":
                    scores.append(metrics[PRIMARY_METRIC[self.tasks[task].level]])
        self.model.train()
        score = float(np.mean(scores))
        if self.config.checkpoint_path and score > self._best_score:
            self._best_score = score
            buffer = io.BytesIO()
            torch.save(self.model.state_dict(), buffer)
            atomic_write_bytes(self.config.checkpoint_path, buffer.getvalue())
        for callback in self.callbacks:
            callback(self, "epoch", {"epoch": self.epochs_done, "score": score})

    def fit_gradual(self, stages: list[list[str]], epochs_per_stage: float = 1) -> History:
        """ULMFiT's gradual unfreezing: each stage unfreezes its groups, then trains all unfrozen ones."""
        for groups in stages:
            self.unfreeze(*groups)
            self.fit(epochs_per_stage, stage="+" + ",".join(groups))
            if self.history.interrupted:
                break
        return self.history

    # -------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "validation", tasks: Iterable[str] | None = None) -> dict[str, dict]:
        """Metrics per task on a split: accuracy and macro-F1, or entity F1 for token tasks."""
        was_training = self.model.training
        self.model.eval()
        out = {}
        for name in tasks or self.tasks:
            task = self.tasks[name]
            preds, golds, loss_sum, count = [], [], 0.0, 0
            for batch in self._loader(name, split, False, self.config.eval_batch_size):
                batch = _to(batch, self.device)
                with self._autocast():
                    logits = self.model(name, batch).float()
                labels = batch["labels"]
                loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum").item()
                count += int((labels != -100).sum())
                predicted = logits.argmax(-1).cpu()
                labels = labels.cpu()
                if task.level == "sentence":
                    preds += predicted.tolist()
                    golds += labels.tolist()
                else:
                    for p, g in zip(predicted, labels):
                        keep = g != -100
                        preds.append(p[keep].tolist())
                        golds.append(g[keep].tolist())
            out[name] = _metrics(task, preds, golds, loss_sum / max(count, 1))
        self.model.train(was_training)
        return out

    # -------------------------------------------------------------------------- reporting
    def result(self, scenario: str, **extra) -> dict:
        """A JSON-ready record of this run for the comparison chapter."""
        final = self.history.final("validation") or {k: {**v} for k, v in self.evaluate().items()}
        metrics = {}
        for task, values in final.items():
            primary = PRIMARY_METRIC[self.tasks[task].level]
            metrics[task] = {"metric": primary, "value": values[primary], **{k: v for k, v in values.items() if isinstance(v, (int, float))}}
        return {
            "scenario": scenario,
            "model": model_label(self.model),
            "tasks": list(self.tasks),
            "metrics": metrics,
            "trainable_params": count_trainable(self.model),
            "total_params": sum(p.numel() for p in self.model.parameters()),
            "train_seconds": round(self.train_seconds, 3),
            "examples_per_second": round(self.examples_seen / self.train_seconds, 2) if self.train_seconds else None,
            "peak_memory_mb": round(self.peak_memory_mb, 1),
            "steps": self.global_step,
            "epochs": self.epochs_done,
            "device": self.device.type,
            "config": asdict(self.config),
            **extra,
        }




@torch.no_grad()
def embed_texts(model: MultiTaskModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int = 64, max_length: int = 128) -> torch.Tensor:
    """Mean-pooled sentence embeddings of raw texts (eval mode, on the model's device), on CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        chunks.append(model.embed(_to(batch, device)).cpu())
    model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, model.hidden_size)
