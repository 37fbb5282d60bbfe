"""The multi-task Trainer: a short loop around a public `step`, with everything optional in callbacks.

Freezing lives in the optimizer's parameter groups: `trainer.freeze` and `trainer.unfreeze` keep
the model, the optimizer (groups and Adam state), the schedule and the clipping in step, whether
they are called before a run, between runs, or from a callback during one.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, set_seed

from .batches import SAMPLING, TokenizedTasks, make_loader, multitask_stream, to_device
from .callbacks import Callback, Evaluation, History, PeakMemory, ProgressBar
from .tasks import TaskData
from .encoder import model_label, pick_device  # noqa: F401 - model_label: part of this module's public names
from .errors import MTLError, TrainingDiverged
from .evaluation import PRIMARY_METRIC, TaskEvaluation, evaluate_task
from .features import FeatureCache
from .groups import count_trainable, freeze, layer_groups, resolve_groups, unfreeze
from .model import MultiTaskModel
from .optim import DEFAULT_FACTOR, RateSchedule, audit_optimizer, discriminative_rates, param_groups_for

_FIT_SEED_STRIDE = 1_000_003  # each later fit of one trainer gets its own seed, derived from config.seed
_SEED_RANGE = 2**32  # numpy's seeds lie in [0, 2**32 - 1]; derived seeds wrap around to stay there


@dataclass
class TrainConfig:
    """Everything a run depends on. Rates: heads at `lr`, the top backbone depth at `backbone_lr`
    (default `lr`), each depth below divided by `factor` (1: one rate; 2.6: ULMFiT)."""

    epochs: float = 1
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 1e-3
    factor: float = DEFAULT_FACTOR
    backbone_lr: float | None = None
    weight_decay: float = 0.01
    schedule: str = "slanted"  # "slanted" (ULMFiT's slanted triangular) or "constant"
    cut_frac: float = 0.1
    ratio: float = 32.0
    max_grad_norm: float | None = 1.0
    sampling: str = "proportional"  # "proportional", "round_robin" or "temperature"
    temperature: float = 2.0
    loss_weights: dict[str, float] | None = None
    max_length: int = 128
    padding: str = "longest"  # dynamic padding; "max_length" pads every batch to max_length
    bucket_by_length: bool = True  # batches of similar lengths: about 2x faster on CPU, same data per epoch
    cache_features: bool = False
    precision: str = "fp32"  # "bf16": autocast forward and loss; weights and optimizer stay fp32
    eval_every: float | None = 1.0  # epochs between evaluations during fit; None: only on request
    eval_train: bool = False  # also score a slice of the training set: the train/validation gap
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    checkpoint_path: str | None = None
    sync_every: int = 1  # steps between reading the loss on the host; >1 needs a fused optimizer
    compile: bool = False  # torch.compile the model in place (nn.Module.compile): fused kernels, a slow first step

    def __post_init__(self) -> None:
        problems = [msg for msg in (self._check(f.name) for f in fields(self)) if msg]
        if problems:
            raise ValueError("Invalid TrainConfig: " + "; ".join(problems) + ".")

    def _check(self, name: str) -> str | None:
        value = getattr(self, name)
        finite = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        count = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)  # noqa: E731
        rules = {
            "epochs": (finite(value) and value > 0, "a finite number of epochs > 0 (fractions allowed)"),
            "batch_size": (count(value) and value >= 1, "an integer >= 1"),
            "eval_batch_size": (count(value) and value >= 1, "an integer >= 1"),
            "lr": (finite(value) and value > 0, "a finite rate > 0"),
            "factor": (finite(value) and value > 0, "a finite divisor > 0 (1: one rate; 2.6: ULMFiT; 1/0.95: layer-wise decay 0.95)"),
            "backbone_lr": (value is None or (finite(value) and value > 0), "None or a finite rate > 0"),
            "weight_decay": (finite(value) and value >= 0, "a finite number >= 0"),
            "schedule": (value in ("slanted", "constant"), "'slanted' or 'constant'"),
            "cut_frac": (finite(value) and 0 < value < 1, "a fraction strictly between 0 and 1"),
            "ratio": (finite(value) and value >= 1, "a finite number >= 1 (the peak rate over the lowest; 1: no warm-up)"),
            "max_grad_norm": (value is None or (finite(value) and value > 0), "None (no clipping) or a finite norm > 0"),
            "sampling": (value in SAMPLING, " or ".join(repr(s) for s in SAMPLING)),
            "temperature": (finite(value) and value > 0, "a finite number > 0"),
            "loss_weights": (value is None or (isinstance(value, Mapping) and all(finite(w) and w >= 0 for w in value.values())),
                             "None or a mapping of task name to a finite weight >= 0"),
            "max_length": (count(value) and value >= 2, "an integer >= 2"),
            "padding": (value in ("longest", "max_length"), "'longest' or 'max_length'"),
            "precision": (value in ("fp32", "bf16"), "'fp32' or 'bf16'"),
            "eval_every": (value is None or (finite(value) and value > 0), "None or a finite number of epochs > 0"),
            "seed": (count(value) and 0 <= value < _SEED_RANGE, "an integer from 0 to 2**32 - 1, numpy's seed range"),
            "device": (isinstance(value, str) and (value in ("auto", "cpu", "cuda") or value.startswith("cuda:")), "'auto', 'cpu', 'cuda' or 'cuda:N'"),
            "sync_every": (count(value) and value >= 1, "an integer >= 1"),
            "compile": (isinstance(value, bool), "True or False"),
        }
        if name in rules and not rules[name][0]:
            return f"{name}={value!r} (allowed: {rules[name][1]})"
        return None


def _adamw(groups: list[dict]) -> torch.optim.Optimizer:
    """AdamW as one fused kernel where torch has one: several times faster than the per-tensor
    default on MiniLM's 22.7M parameters; the default elsewhere."""
    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups)


class Trainer:
    """Trains a MultiTaskModel on several tasks at once.

    Callbacks (`mtl_helpers.callbacks`) hook into the loop; the history, the progress bar (config
    `progress`), evaluation (`eval_every`, `checkpoint_path`) and peak memory are installed by default.
    """

    def __init__(self, model: MultiTaskModel, tokenizer: PreTrainedTokenizerBase, tasks: Iterable[TaskData],
                 config: TrainConfig | None = None, callbacks: Iterable[Callback] = ()):
        self.config = config or TrainConfig()
        self.model, self.tokenizer = model, tokenizer
        self.tasks = self._check_tasks(list(tasks))
        self._check_model()
        self.device = pick_device(self.config.device)
        self.model.to(self.device)
        if self.config.compile:  # in place: model(task, batch) runs the compiled forward; freezing still works on it.
            self.model.compile(dynamic=True)  # dynamic padding changes the length every batch: one graph for all
        self.rates = discriminative_rates(model, self.config.lr, self.config.factor, self.config.backbone_lr)
        self.rate_scale = 1.0
        self.tokenized = TokenizedTasks(self.tasks, tokenizer, self.config.max_length, self.config.padding)
        self.data = FeatureCache(model, self.tokenized, self.device, self.config.eval_batch_size, self._autocast_factory()) \
            if self.config.cache_features else self.tokenized
        self.history = History()
        defaults: list[Callback] = [self.history, PeakMemory()]
        if self.config.progress:
            defaults.append(ProgressBar())
        if self.config.eval_every is not None or self.config.checkpoint_path:
            splits = ("validation", "train_eval") if self.config.eval_train else ("validation",)
            defaults.append(Evaluation(splits, self.config.eval_every, self.config.checkpoint_path))
        self.callbacks = defaults + list(callbacks)
        self.schedule = RateSchedule("constant")  # fit replaces it; step() works outside fit too
        self.optimizer: torch.optim.Optimizer | None = None
        self._trainable: list[torch.nn.Parameter] | None = None
        self._model_params: list[torch.nn.Parameter] = []
        self._trainable_flags: tuple[bool, ...] = ()  # requires_grad of _model_params when the optimizer last matched
        self.global_step = self.examples_seen = self.fits_started = 0
        self.epochs_done = self.train_seconds = self.peak_memory_mb = 0.0
        self.memory_method = ""
        self.stage, self.fit_completed, self.fit_epochs = "", True, 0.0
        self.steps_per_epoch = self.total_steps = self.step_in_fit = 0
        # Groups that received at least one optimizer update, each with the highest learning rate actually
        # applied to it (after the schedule) at such a step: what records call `trained`.
        self.trained_groups: dict[str, float] = {}
        self._evaluations: dict[tuple[str, str], tuple[tuple, TaskEvaluation]] = {}
        self._bad_step: torch.Tensor | None = None
        self._pending_flags: list[tuple[int, str, torch.Tensor]] = []
        self._build_optimizer()

    # ------------------------------------------------------------------ checks at construction
    def _check_tasks(self, tasks: list[TaskData]) -> dict[str, TaskData]:
        if not tasks:
            raise MTLError("Trainer needs at least one task.")
        names = [t.name for t in tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise MTLError(f"Two tasks share the name {twice[0]!r}; every task needs its own name (and head).")
        unknown = sorted(set(self.config.loss_weights or {}) - set(names))
        if unknown:
            raise MTLError(f"TrainConfig.loss_weights names unknown task(s) {unknown}; the tasks are {names}.")
        return {t.name: t for t in tasks}

    def _check_model(self) -> None:
        for name, task in self.tasks.items():
            head = self.model.head(name)
            if head.level != task.level or head.num_labels != len(task.label_names):
                raise MTLError(
                    f"Head {name!r} is a {head.level} head with {head.num_labels} classes, but task {name!r} is "
                    f"{task.level}-level with {len(task.label_names)} labels. Build the model with MultiTaskModel.for_tasks."
                )
        rows = self.model.encoder.get_input_embeddings().num_embeddings
        if len(self.tokenizer) > rows:
            raise MTLError(f"The tokenizer has {len(self.tokenizer)} tokens but the encoder's embedding table only {rows} rows: "
                           "token ids beyond it would fail at the first step. Use the tokenizer that belongs to the encoder "
                           "(load_encoder returns both), or call encoder.resize_token_embeddings(len(tokenizer)).")

    # ------------------------------------------------------------------ freezing: one contract
    def _build_optimizer(self) -> None:
        groups = param_groups_for(self.model, list(self.rates), self._scaled_rates(), self.config.weight_decay)
        self.optimizer = _adamw(groups) if groups else None
        self._after_change()

    def _scaled_rates(self) -> dict[str, float]:
        return {n: r * self.rate_scale for n, r in self.rates.items()}

    def _after_change(self) -> None:
        self._trainable = None
        if self.optimizer is not None:
            self.schedule.apply(self.optimizer)  # new groups start at the running schedule's rate
        self.audit()
        self._model_params = list(self.model.parameters())
        self._trainable_flags = self._current_flags()
        if self.model.training:
            self.model.train()  # the dropout rule follows what is frozen

    def audit(self) -> None:
        """Every trainable parameter in exactly one optimizer group, no frozen one in any."""
        if self.optimizer is None:
            if count_trainable(self.model):
                raise MTLError("Parameters are trainable but no optimizer exists; call trainer.unfreeze to add them.")
            return
        audit_optimizer(self.model, self.optimizer)

    def _current_flags(self) -> tuple[bool, ...]:
        return tuple(p.requires_grad for p in self._model_params)

    def _check_no_outside_changes(self) -> None:
        """Refuse to train when groups were frozen or unfrozen on the model itself (module-level
        `freeze` / `unfreeze`) after the trainer was built: the optimizer would not follow. Cheap
        enough for every step: one flag per parameter; `audit()` is the full check."""
        if self._current_flags() == self._trainable_flags:
            return
        held = {id(p) for p in self.trainable_parameters()}
        unfrozen, frozen = [], []
        for name, group in layer_groups(self.model).items():
            if any(p.requires_grad and id(p) not in held for _, p in group.params):
                unfrozen.append(name)
            if any(not p.requires_grad and id(p) in held for _, p in group.params):
                frozen.append(name)
        fixes = []
        if unfrozen:
            fixes.append(f"{unfrozen} became trainable but are not in the optimizer, so they would never train "
                         f"(fix: trainer.unfreeze({', '.join(map(repr, unfrozen))}))")
        if frozen:
            fixes.append(f"{frozen} were frozen but are still in the optimizer "
                         f"(fix: trainer.freeze({', '.join(map(repr, frozen))}))")
        if not fixes:  # flags differ, yet no group is out of step: the full check decides
            self.audit()
            self._trainable_flags = self._current_flags()
            return
        raise MTLError("Groups were frozen or unfrozen on the model (mtl_helpers.freeze / unfreeze) after the Trainer "
                       "was built: " + "; ".join(fixes) + ". Freeze and unfreeze through the trainer, which keeps its "
                       "optimizer in step; calling it now with these groups repairs the trainer.")

    def unfreeze(self, *names: str) -> list[str]:
        """Unfreeze groups (names or aliases); their parameters join the optimizer at their own rates."""
        chosen = resolve_groups(self.model, *names)
        if self.config.cache_features and any(not layer_groups(self.model)[n].is_head for n in chosen):
            raise MTLError("This trainer trains on cached features, so the backbone must stay frozen; "
                           "use a trainer with cache_features=False to train backbone groups.")
        unfreeze(self.model, *chosen)
        if self.optimizer is None:
            self._build_optimizer()
            return chosen
        held = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        for group in param_groups_for(self.model, chosen, self._scaled_rates(), self.config.weight_decay):
            group["params"] = [p for p in group["params"] if id(p) not in held]
            if group["params"]:
                self.optimizer.add_param_group(group)
        self._after_change()
        return chosen

    def freeze(self, *names: str) -> list[str]:
        """Freeze groups (names or aliases); their parameters and Adam state leave the optimizer."""
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
        self._after_change()
        return chosen

    def scale_rates(self, scale: float) -> None:
        """Scale every group's peak rate (e.g. ULMFiT lowering the top rate from stage to stage)."""
        if not (math.isfinite(scale) and scale > 0):
            raise MTLError(f"A rate scale must be a finite number > 0, got {scale!r}.")
        self.rate_scale = scale
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["peak_lr"] = self.rates[group["name"].split("/")[0]] * scale
        self._after_change()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Exactly the parameters the optimizer holds: what clipping and the divergence checks cover."""
        if self._trainable is None:
            self._trainable = [p for g in self.optimizer.param_groups for p in g["params"]] if self.optimizer else []
        return self._trainable

    # ------------------------------------------------------------------ the loop
    def fit(self, epochs: float | None = None, tasks: Iterable[str] | None = None, stage: str = "") -> History:
        """Train for `epochs` (fractions allowed) of the data of `tasks` (default: all)."""
        epochs = self.config.epochs if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not (math.isfinite(epochs) and epochs > 0):
            raise MTLError(f"fit(epochs={epochs!r}): the number of epochs must be a finite number > 0.")
        train_tasks = list(self.tasks) if tasks is None else list(tasks)
        unknown = [t for t in train_tasks if t not in self.tasks]
        if unknown or not train_tasks:
            raise MTLError(f"fit(tasks={train_tasks!r}): train on a non-empty subset of this trainer's tasks {list(self.tasks)}.")
        seed = (self.config.seed + _FIT_SEED_STRIDE * self.fits_started) % _SEED_RANGE
        self.fits_started += 1
        set_seed(seed)  # here, not at construction: code run in between cannot change the run
        generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
        loaders = {t: self._loader(t, "train", shuffle=True, generator=generator) for t in train_tasks}
        self.steps_per_epoch = sum(len(loader) for loader in loaders.values())
        self.total_steps = max(1, round(epochs * self.steps_per_epoch))
        self.fit_epochs, self.stage, self.step_in_fit, self.fit_completed = epochs, stage, 0, False
        self.schedule = RateSchedule(self.config.schedule, self.total_steps, self.config.cut_frac, self.config.ratio)
        stream = multitask_stream(loaders, self.config.sampling, self.config.temperature, rng)
        self.model.train()
        try:
            self._emit("on_fit_start")  # callbacks may unfreeze here (gradual unfreezing)
            self._check_no_outside_changes()
            if self.optimizer is None:
                raise MTLError("Nothing is trainable: every group is frozen. Unfreeze a group (trainer.unfreeze('heads')) "
                               "or only call evaluate().")
            self._check_every_task_can_learn(train_tasks)
            while self.step_in_fit < self.total_steps:
                started = time.perf_counter()
                task, batch = next(stream)
                record = self.step(task, batch)
                self.train_seconds += time.perf_counter() - started
                self.epochs_done += 1 / self.steps_per_epoch
                if self.step_in_fit % self.config.sync_every == 0:
                    self._check_pending()
                self._emit("on_step_end", record)
                if self.step_in_fit % self.steps_per_epoch == 0 or self.step_in_fit == self.total_steps:
                    self._emit("on_epoch_end")
            self._check_pending()
            self.fit_completed = True
        except KeyboardInterrupt:
            warnings.warn(f"Training interrupted at step {self.global_step}; the history so far is kept.", stacklevel=2)
        finally:
            self._emit("on_fit_end")
        return self.history

    def _check_every_task_can_learn(self, train_tasks: list[str]) -> None:
        """Refuse a fit in which a task's loss would reach no trainable parameter (its head and the
        whole backbone frozen): its first batch would fail inside autograd."""
        groups = layer_groups(self.model)
        if any(g.trainable for g in groups.values() if not g.is_head):
            return
        stuck = [t for t in train_tasks if not groups[f"head.{t}"].trainable]
        if not stuck:
            return
        others = [t for t in train_tasks if t not in stuck]
        leave_out = f"train without it (trainer.fit(tasks={others!r})), or " if others else ""
        raise MTLError(f"Task {stuck[0]!r} has nothing trainable on its path: its head (head.{stuck[0]}) and every "
                       f"backbone group are frozen, so its loss has no gradient. Either {leave_out}unfreeze its head "
                       f"or a backbone group (trainer.unfreeze('head.{stuck[0]}'), or e.g. "
                       "trainer.unfreeze('layer.0')).")

    def _emit(self, event: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)

    def loss(self, task: str, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logits = self.model(task, batch)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1), ignore_index=-100)
        return loss * (self.config.loss_weights or {}).get(task, 1.0)

    def step(self, task: str, batch: Mapping[str, torch.Tensor]) -> dict:
        """One optimizer step on one batch: rates from the schedule, forward, loss, backward, clipping,
        a divergence check, the update. Returns the step's record (loss as a tensor, rates used)."""
        self._check_no_outside_changes()
        if self.optimizer is None:
            raise MTLError("Nothing is trainable: every group is frozen, so there is no step to take.")
        batch = to_device(batch, self.device)
        rates = self.schedule.apply(self.optimizer)
        with self._autocast():
            loss = self.loss(task, batch)
        if not loss.requires_grad:
            raise MTLError(f"The loss of task {task!r} reaches no trainable parameter (its head and every backbone "
                           "group are frozen, or the step ran under torch.no_grad), so there is nothing to update. "
                           "Leave the task out (trainer.fit(tasks=[...]) without it) or unfreeze its head or a "
                           f"backbone group (trainer.unfreeze('head.{task}')).")
        eager = self.config.sync_every == 1 or not self.optimizer.defaults.get("fused")
        if eager and not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self._diverged("loss", float(loss.detach()), self.global_step + 1, task)
        loss.backward()
        params = self.trainable_parameters()
        if self.config.max_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if eager:
            if not torch.isfinite(norm):
                self.optimizer.zero_grad(set_to_none=True)
                self._diverged("gradient norm", float(norm), self.global_step + 1, task)
        else:  # checked on the device: a bad step and every later one are skipped until the host looks
            bad = (~torch.isfinite(loss.detach()) | ~torch.isfinite(norm)).float()
            self._bad_step = bad if self._bad_step is None else torch.maximum(self._bad_step, bad)
            self.optimizer.found_inf = self._bad_step
            self._pending_flags.append((self.global_step + 1, task, bad))
        self._record_trained_groups()
        self.optimizer.step()
        for param in params:  # fused AdamW writes in place without bumping the version counters that
            torch.autograd.graph.increment_version(param)  # key the score cache (torch 2.13, checked by a test)
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.advance()
        self.global_step += 1
        self.step_in_fit += 1
        self.examples_seen += len(batch["labels"])
        return {"step": self.global_step, "task": task, "loss": loss.detach(), "lr": rates, "stage": self.stage}

    def _record_trained_groups(self) -> None:
        """Keep, per group updated at this step (in the optimizer, with a gradient: AdamW skips
        parameters without one), the highest rate actually applied."""
        for group in self.optimizer.param_groups:
            if any(p.grad is not None for p in group["params"]):
                name = group["name"].split("/")[0]
                self.trained_groups[name] = max(self.trained_groups.get(name, 0.0), float(group["lr"]))

    def _check_pending(self) -> None:
        if not self._pending_flags:
            return
        flags, self._pending_flags = self._pending_flags, []
        if float(self._bad_step) > 0:
            step, task, _ = next((s, t, f) for s, t, f in flags if float(f) > 0)
            self._bad_step = None
            del self.optimizer.found_inf
            self._diverged("loss or gradient norm", float("nan"), step, task)

    def _diverged(self, what: str, value: float, step: int, task: str) -> None:
        raise TrainingDiverged(f"The {what} became {value} at step {step} (task {task!r}); the model keeps its state "
                               f"from step {step - 1}. Lower the learning rate or check the inputs.")

    def _autocast_factory(self):
        if self.config.precision == "bf16":
            device_type = pick_device(self.config.device).type
            return lambda: torch.autocast(device_type, dtype=torch.bfloat16)
        return None

    def _autocast(self):
        factory = self._autocast_factory()
        return factory() if factory else contextlib.nullcontext()

    def _loader(self, task: str, split: str, shuffle: bool, generator: torch.Generator | None = None):
        rows = self.data.rows(task, split)
        lengths = self.data.lengths(rows) if shuffle and self.config.bucket_by_length else None
        return make_loader(rows, self.data.collator(task), self.config.batch_size if shuffle else self.config.eval_batch_size,
                           shuffle, generator, lengths, pin_memory=self.pin_memory)

    @property
    def pin_memory(self) -> bool:
        """Whether the trainer's loaders pin their batches: on a CUDA device, so copies are asynchronous."""
        return self.device.type == "cuda"

    # ------------------------------------------------------------------ evaluation
    def evaluate_outcomes(self, split: str = "validation", tasks: Iterable[str] | None = None) -> dict[str, TaskEvaluation]:
        """Metrics and per-example outcomes per task on a split ("validation", "test", "train", "train_eval")."""
        out = {}
        weights = self._weights_key()
        for name in tasks or self.tasks:
            key = (name, split)
            cached = self._evaluations.get(key)
            if cached is not None and cached[0] == weights:
                out[name] = cached[1]
                continue
            rows = self.data.rows(name, split)
            order = self._eval_order(rows)
            loader = make_loader([rows[i] for i in order], self.data.collator(name), self.config.eval_batch_size, False,
                                 pin_memory=self.pin_memory)
            words = None
            if self.tasks[name].level == "token":  # every word is scored, also those max_length cut off
                alignments = self.tokenized.alignments(name, split)
                words = [alignments[i] for i in order]
            result = evaluate_task(self.model, self.tasks[name], split, loader, self.device, self._autocast_factory(),
                                   words)
            restored = np.empty_like(result.outcomes)
            restored[order] = result.outcomes  # back to the split's own row order: runs stay comparable
            result.outcomes = restored
            self._evaluations[key] = (weights, result)
            out[name] = result
        return out

    def _weights_key(self) -> tuple:
        """What the score cache is keyed on: each parameter's and buffer's object, storage and version
        counter. Torch bumps a tensor's `_version` on every in-place change (optimizer steps, the
        `copy_` of load_state_dict, another trainer's steps), so a score is reused only while no weight
        can have changed; the train/eval mode is no part of it, as scoring always runs in eval mode.
        `step` bumps the counters itself, as fused AdamW does not; writes through `tensor.data`, or a fused
        optimizer run outside a Trainer, bypass them: then build a new Trainer to score the new weights."""
        tensors = itertools.chain(self.model.parameters(), self.model.buffers())
        return tuple((id(t), t.data_ptr(), t._version) for t in tensors)

    @staticmethod
    def _eval_order(rows: list[dict]) -> list[int]:
        if rows and "input_ids" in rows[0]:
            return sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # little padding
        return list(range(len(rows)))

    def evaluate(self, split: str = "validation", tasks: Iterable[str] | None = None) -> dict[str, dict]:
        """Metrics per task on a split: accuracy and macro-F1, or entity F1 for token tasks."""
        return {name: dict(r.metrics) for name, r in self.evaluate_outcomes(split, tasks).items()}

    # ------------------------------------------------------------------ reporting
    def result(self, scenario: str, profile: str, splits: Iterable[str] = ("validation", "test"), **extra):
        """The run's record (`mtl_helpers.results.RunRecord`): metrics and outcomes on `splits` now."""
        from .records import RunRecord

        return RunRecord.from_trainer(self, scenario, profile, tuple(splits), extra)

    @property
    def primary_metrics(self) -> dict[str, str]:
        return {n: PRIMARY_METRIC[t.level] for n, t in self.tasks.items()}

    def config_dict(self) -> dict:
        return asdict(self.config)
