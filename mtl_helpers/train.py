"""The multi-task Trainer: a short loop around a public `step`, with everything optional in callbacks.

Freezing lives in the optimizer's parameter groups: `trainer.freeze` and `trainer.unfreeze` keep
the model, the optimizer (groups and Adam state), the schedule and the clipping in step, whether
they are called before a run, between runs, or from a callback during one. The run's counters live
in `trainer.state` (a TrainerState); `TrainConfig` is in `mtl_helpers.config`.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase, set_seed

from .batches import TokenizedTasks, make_loader, multitask_stream, to_device
from .callbacks import Callback, Evaluation, History, PeakMemory, ProgressBar
from .config import SEED_RANGE, TrainConfig
from .tasks import TaskData
from .encoder import model_label, pick_device  # noqa: F401 - notebooks import model_label from here
from .divergence import DivergenceCheck
from .errors import MTLError
from .evaluation import PRIMARY_METRIC, TaskEvaluation, precision_autocast, score_rows, weights_key
from .features import trainer_data
from .audit import refuse_groups_out_of_step
from .groups import check_tasks_can_learn, freeze, layer_groups, resolve_groups, unfreeze
from .model import MultiTaskModel, check_model_fits
from .optim import RateSchedule, audit_optimizer, discriminative_rates, fused_adamw, param_groups_for
from .records import RunRecord
from .state import StepRecord, TrainerState, read_state

_FIT_SEED_STRIDE = 1_000_003  # each later fit of one trainer gets its own seed, derived from config.seed


def _callback_order(callback: Callback) -> int:
    return getattr(callback, "order", 0)  # a duck-typed callback without `order` runs with the default ones


class Trainer:
    """Trains a MultiTaskModel on several tasks at once.

    Callbacks (`mtl_helpers.callbacks`) hook into the loop, run in their `order`; the history, the progress
    bar (config `progress`), evaluation (`eval_every`, `checkpoint_path`) and peak memory are installed by
    default.
    """

    # The run's counters live in `self.state`; these names stay readable on the trainer (records, notebooks).
    global_step = read_state("global_step")
    step_in_fit = read_state("step_in_fit")
    epochs_done = read_state("epochs_done")
    steps_per_epoch = read_state("steps_per_epoch")
    total_steps = read_state("total_steps")
    fit_epochs = read_state("fit_epochs")
    stage = read_state("stage")
    fit_completed = read_state("fit_completed")
    examples_seen = read_state("examples_seen")
    train_seconds = read_state("train_seconds")
    peak_memory_mb = read_state("peak_memory_mb")
    memory_method = read_state("memory_method")
    trained_groups = read_state("trained_groups")

    def __init__(
        self,
        model: MultiTaskModel,
        tokenizer: PreTrainedTokenizerBase,
        tasks: Iterable[TaskData],
        config: TrainConfig | None = None,
        callbacks: Iterable[Callback] = (),
    ):
        self.config = config or TrainConfig()
        self.model, self.tokenizer = model, tokenizer
        self.tasks = self._check_tasks(list(tasks))
        check_model_fits(model, tokenizer, self.tasks.values())
        self.device = pick_device(self.config.device)
        self.model.to(self.device)
        if self.config.compile:  # in place: model(task, batch) runs the compiled forward; freezing still works on it.
            self.model.compile(dynamic=True)  # dynamic padding changes the length every batch: one graph for all
        self.rates = discriminative_rates(model, self.config.lr, self.config.factor, self.config.backbone_lr)
        self.rate_scale = 1.0
        self.tokenized = TokenizedTasks(self.tasks, tokenizer, self.config.max_length, self.config.padding)
        self.data = trainer_data(model, self.tokenized, self.device, self.config, self._autocast_factory())
        self.history = History()
        defaults: list[Callback] = [self.history, PeakMemory()]
        if self.config.progress:
            defaults.append(ProgressBar())
        if self.config.eval_every is not None or self.config.checkpoint_path:
            splits = ("validation", "train_eval") if self.config.eval_train else ("validation",)
            defaults.append(Evaluation(splits, self.config.eval_every, self.config.checkpoint_path))
        self.callbacks = defaults + list(callbacks)  # run sorted by `order`, not in this list's order
        self.schedule = RateSchedule("constant")  # fit replaces it; step() works outside fit too
        self.optimizer: torch.optim.Optimizer | None = None
        self._trainable: list[torch.nn.Parameter] | None = None
        self._model_params: list[torch.nn.Parameter] = []
        self._trainable_flags: tuple[bool, ...] = ()  # requires_grad of _model_params when the optimizer last matched
        self.state = TrainerState()
        self.divergence = DivergenceCheck(self.config.sync_every)
        self._evaluations: dict[tuple[str, str], tuple[tuple, TaskEvaluation]] = {}
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

    # ------------------------------------------------------------------ freezing: one contract
    def _build_optimizer(self) -> None:
        groups = param_groups_for(self.model, list(self.rates), self._scaled_rates(), self.config.weight_decay)
        self.optimizer = fused_adamw(groups) if groups else None
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
            if any(p.requires_grad for p in self.model.parameters()):
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
        refuse_groups_out_of_step(self.model, {id(p) for p in self.trainable_parameters()})
        self.audit()  # flags differ, yet no group is out of step: the full check decides
        self._trainable_flags = self._current_flags()

    def unfreeze(self, *names: str) -> list[str]:
        """Unfreeze groups (names or aliases); their parameters join the optimizer at their own rates."""
        chosen = resolve_groups(self.model, *names)
        if self.config.cache_features and any(not layer_groups(self.model)[n].is_head for n in chosen):
            raise MTLError(
                "This trainer trains on cached features, so the backbone must stay frozen; "
                "use a trainer with cache_features=False to train backbone groups."
            )
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
        train_tasks = list(self.tasks) if tasks is None else list(tasks)
        stream = self._start_fit(self.config.epochs if epochs is None else epochs, train_tasks, stage)
        state = self.state
        try:
            self._emit("on_fit_start")  # callbacks may unfreeze here (gradual unfreezing)
            self._check_no_outside_changes()
            if self.optimizer is None:
                raise MTLError(
                    "Nothing is trainable: every group is frozen. Unfreeze a group "
                    "(trainer.unfreeze('heads')) or only call evaluate()."
                )
            check_tasks_can_learn(self.model, train_tasks)
            while state.step_in_fit < state.total_steps:
                started = time.perf_counter()
                record = self.step(*next(stream))
                state.train_seconds += time.perf_counter() - started
                state.epochs_done += 1 / state.steps_per_epoch
                if state.step_in_fit % self.config.sync_every == 0:
                    self.divergence.flush()
                self._emit("on_step_end", record)
                if state.step_in_fit % state.steps_per_epoch == 0 or state.step_in_fit == state.total_steps:
                    self._emit("on_epoch_end")
            self.divergence.flush()
            state.fit_completed = True
        except KeyboardInterrupt:
            warnings.warn(
                f"Training interrupted at step {state.global_step}; the history so far is kept.", stacklevel=2
            )
        finally:
            self._emit("on_fit_end")
        return self.history

    def step(self, task: str, batch: Mapping[str, torch.Tensor]) -> StepRecord:
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
            raise MTLError(
                f"The loss of task {task!r} reaches no trainable parameter (its head and every backbone "
                "group are frozen, or the step ran under torch.no_grad), so there is nothing to update. "
                "Leave the task out (trainer.fit(tasks=[...]) without it) or unfreeze its head or a "
                f"backbone group (trainer.unfreeze('head.{task}'))."
            )
        loss.backward()
        params = self.trainable_parameters()
        if self.config.max_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        self.divergence.after_backward(self.optimizer, loss, norm, self.state.global_step + 1, task)
        self._record_trained_groups()
        self.optimizer.step()
        for param in params:  # fused AdamW writes in place without bumping the version counters that
            torch.autograd.graph.increment_version(param)  # key the score cache (torch 2.13, checked by a test)
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.advance()
        self.state.global_step += 1
        self.state.step_in_fit += 1
        self.state.examples_seen += len(batch["labels"])
        return StepRecord(self.state.global_step, task, loss.detach(), rates, self.state.stage)

    def _start_fit(self, epochs: float, train_tasks: list[str], stage: str) -> Iterator[tuple[str, dict]]:
        """Check the fit's arguments, seed it, set its counters and schedule; the stream of (task, batch)."""
        is_number = isinstance(epochs, (int, float)) and not isinstance(epochs, bool)
        if not (is_number and math.isfinite(epochs) and epochs > 0):
            raise MTLError(f"fit(epochs={epochs!r}): the number of epochs must be a finite number > 0.")
        unknown = [t for t in train_tasks if t not in self.tasks]
        if unknown or not train_tasks:
            raise MTLError(
                f"fit(tasks={train_tasks!r}): train on a non-empty subset of this trainer's tasks {list(self.tasks)}."
            )
        state = self.state
        seed = (self.config.seed + _FIT_SEED_STRIDE * state.fits_started) % SEED_RANGE
        state.fits_started += 1
        set_seed(seed)  # here, not at construction: code run in between cannot change the run
        generator, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
        loaders = {t: self._loader(t, "train", shuffle=True, generator=generator) for t in train_tasks}
        state.steps_per_epoch = sum(len(loader) for loader in loaders.values())
        state.total_steps = max(1, round(epochs * state.steps_per_epoch))
        state.fit_epochs, state.stage, state.step_in_fit, state.fit_completed = epochs, stage, 0, False
        self.schedule = RateSchedule(self.config.schedule, state.total_steps, self.config.cut_frac, self.config.ratio)
        self.model.train()
        return multitask_stream(loaders, self.config.sampling, self.config.temperature, rng)

    def _emit(self, event: str, *args: object) -> None:
        for callback in sorted(self.callbacks, key=_callback_order):  # sorted() is stable: ties keep their order
            getattr(callback, event)(self, *args)

    def task_loss(self, task: str, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of a task's logits against the batch's labels (-100: no label), times the task's
        loss weight (config `loss_weights`): the supervised part of every trainer's loss."""
        flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1)
        loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
        return loss * (self.config.loss_weights or {}).get(task, 1.0)

    def loss(self, task: str, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.task_loss(task, self.model(task, batch), batch)

    def _record_trained_groups(self) -> None:
        """Keep, per group updated at this step (in the optimizer, with a gradient: AdamW skips
        parameters without one), the highest rate actually applied."""
        trained = self.state.trained_groups
        for group in self.optimizer.param_groups:
            if any(p.grad is not None for p in group["params"]):
                name = group["name"].split("/")[0]
                trained[name] = max(trained.get(name, 0.0), float(group["lr"]))

    def _autocast_factory(self):
        return precision_autocast(self.config.precision, self.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        factory = self._autocast_factory()
        return factory() if factory else contextlib.nullcontext()

    def _loader(self, task: str, split: str, shuffle: bool, generator: torch.Generator | None = None):
        rows = self.data.rows(task, split)
        lengths = self.data.lengths(rows) if shuffle and self.config.bucket_by_length else None
        batch_size = self.config.batch_size if shuffle else self.config.eval_batch_size
        return make_loader(
            rows, self.data.collator(task), batch_size, shuffle, generator, lengths, pin_memory=self.pin_memory
        )

    @property
    def pin_memory(self) -> bool:
        """Whether the trainer's loaders pin their batches: on a CUDA device, so copies are asynchronous."""
        return self.device.type == "cuda"

    # ------------------------------------------------------------------ evaluation
    def evaluate_outcomes(
        self, split: str = "validation", tasks: Iterable[str] | None = None
    ) -> dict[str, TaskEvaluation]:
        """Metrics and per-example outcomes per task on a split ("validation", "test", "train", "train_eval"),
        scored by `mtl_helpers.evaluation.score_rows` on the trainer's rows (or cached features); a
        score is reused while no weight changed."""
        out = {}
        weights = weights_key(self.model)  # a score is reused while no weight changed
        for name in tasks or self.tasks:
            cached = self._evaluations.get((name, split))
            if cached is None or cached[0] != weights:
                task = self.tasks[name]  # token tasks: every word is scored, also those max_length cut off
                words = self.tokenized.alignments(name, split) if task.level == "token" else None
                result = score_rows(
                    self.model,
                    task,
                    split,
                    self.data.rows(name, split),
                    self.data.collator(name),
                    self.device,
                    self.config.eval_batch_size,
                    self._autocast_factory(),
                    words,
                    pin_memory=self.pin_memory,
                )
                cached = self._evaluations[(name, split)] = (weights, result)
            out[name] = cached[1]
        return out

    def evaluate(self, split: str = "validation", tasks: Iterable[str] | None = None) -> dict[str, dict]:
        """Metrics per task on a split: accuracy and macro-F1, or entity F1 for token tasks."""
        return {name: dict(r.metrics) for name, r in self.evaluate_outcomes(split, tasks).items()}

    # ------------------------------------------------------------------ reporting
    def result(
        self, scenario: str, profile: str, splits: Iterable[str] = ("validation", "test"), **extra: object
    ) -> RunRecord:
        """The run's record (`mtl_helpers.results.RunRecord`): metrics and outcomes on `splits` now."""
        return RunRecord.from_trainer(self, scenario, profile, tuple(splits), extra)

    @property
    def primary_metrics(self) -> dict[str, str]:
        return {n: PRIMARY_METRIC[t.level] for n, t in self.tasks.items()}

    def config_dict(self) -> dict:
        return asdict(self.config)


__all__ = ["TrainConfig", "Trainer", "model_label", "pick_device"]
