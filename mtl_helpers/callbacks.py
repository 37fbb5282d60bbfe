"""What the training loop does besides stepping, as callbacks: the history, a progress bar,
evaluation with a best checkpoint, peak memory, and gradual unfreezing (ULMFiT's stages).

A callback overrides any of `on_fit_start(trainer)`, `on_step_end(trainer, step)` (`step`: a
`StepRecord`), `on_epoch_end(trainer)` and `on_fit_end(trainer)`. It may freeze or unfreeze groups
through the trainer at any of them: the optimizer, the schedule and the clipping follow.

Order, as fastai's `Callback.order`: the trainer runs its callbacks sorted by `order` (lowest first),
callbacks of equal order in the order they were added, whatever order they were passed in:

    History (-40) < PeakMemory (-30) < ProgressBar (-20) < Evaluation (-10) < Callback (0),
        BestWeights (0) < GradualUnfreezing (10)

- History first: a fit's entry opens with the stage `fit` was given, before any callback relabels
  the stage, and each step is recorded before a later callback can raise (an interrupted fit keeps it).
- PeakMemory resets the peak before other callbacks allocate at the start of a fit.
- ProgressBar only displays; it names the bar after the fit's own stage, as History does.
- Evaluation before every callback that may change what trains: at a stage boundary of gradual
  unfreezing (the step at which one stage ends and the next begins), the scores, the checkpoint and
  the history's `stage` belong to the stage that trained those weights, not to the one about to start.
- Your own callbacks (order 0) see the step after it was recorded and scored.
- GradualUnfreezing last: it changes what trains from the next step on, once everything that reports
  on the step just taken has run.
"""

from __future__ import annotations

import io
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import psutil
import torch
from tqdm.std import tqdm

from .errors import MTLError
from .evaluation import PRIMARY_METRIC
from .optim import gradual_unfreezing_stages
from .jsonio import atomic_write_bytes
from .state import StepRecord

if TYPE_CHECKING:
    from .model import MultiTaskModel
    from .train import Trainer


class Callback:
    """Base class: every hook does nothing. `order` places it among the trainer's callbacks (module docstring)."""

    order: int = 0

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, step: StepRecord) -> None: ...

    def on_epoch_end(self, trainer: Trainer) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


class History(Callback):
    """Per-step loss and learning rates, evaluations, and each fit's outcome: "completed",
    "interrupted" (cut short after at least one step: Ctrl-C or an error; the weights changed), or
    "failed" (an error before the first step, e.g. nothing trainable: no weight changed)."""

    order = -40

    def __init__(self) -> None:
        self._steps: list[dict] = []
        self.evals: list[dict] = []
        self.fits: list[dict] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        self.fits.append(
            {
                "stage": trainer.stage,
                "start_step": trainer.global_step,
                "steps": 0,
                "completed": False,
                "outcome": "running",
            }
        )

    def on_step_end(self, trainer: Trainer, step: StepRecord) -> None:
        self._steps.append(step.as_dict())  # the loss stays a tensor until read: no host sync per step
        self.fits[-1]["steps"] += 1

    def on_fit_end(self, trainer: Trainer) -> None:
        fit = self.fits[-1]
        fit["completed"] = trainer.fit_completed
        # step_in_fit counts optimizer steps taken, even one whose step-end callbacks then raised
        fit["outcome"] = "completed" if trainer.fit_completed else "interrupted" if trainer.step_in_fit else "failed"

    @classmethod
    def from_steps(cls, steps: list[dict]) -> "History":
        """A History holding given step records (e.g. learning rates a run record kept), for the plots."""
        history = cls()
        history._steps = [dict(s) for s in steps]
        return history

    @property
    def steps(self) -> list[dict]:
        for record in self._steps:
            if isinstance(record["loss"], torch.Tensor):
                record["loss"] = float(record["loss"])
        return self._steps

    @property
    def interrupted(self) -> bool:
        """Whether the latest fit was cut short after changing the weights (Ctrl-C, or an error after a step)."""
        return bool(self.fits) and self.fits[-1]["outcome"] == "interrupted"

    @property
    def ever_interrupted(self) -> bool:
        """Whether any fit was cut short after changing the weights; a fit that failed before its first
        step changed nothing and does not count."""
        return any(f["outcome"] == "interrupted" for f in self.fits)

    def add_eval(self, trainer: Trainer, split: str, task: str, metrics: dict) -> None:
        self.evals.append(
            {
                "epoch": round(trainer.epochs_done, 4),
                "step": trainer.global_step,
                "stage": trainer.stage,
                "task": task,
                "split": split.replace("train_eval", "train"),
                **metrics,
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.evals)

    def step_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: v for k, v in s.items() if k != "lr"} for s in self.steps])

    def lr_frame(self) -> pd.DataFrame:
        """Learning rate of each optimizer group (columns) at each step (rows); NaN while frozen."""
        return pd.DataFrame([s["lr"] for s in self.steps], index=[s["step"] for s in self.steps])

    def final(self, split: str = "validation") -> dict[str, dict]:
        """The latest metrics of each task on `split`."""
        out: dict[str, dict] = {}
        for record in self.evals:
            if record["split"] == split:
                out[record["task"]] = {k: v for k, v in record.items() if k not in ("task", "split")}
        return out


class ProgressBar(Callback):
    """A text progress bar over the fit's steps (plain text, so it also works outside Jupyter widgets)."""

    order = -20

    def on_fit_start(self, trainer: Trainer) -> None:
        self.bar = tqdm(
            total=trainer.total_steps,
            desc=trainer.stage or "training",
            mininterval=2,
            ncols=90,
            leave=False,
            file=sys.stderr,
        )

    def on_step_end(self, trainer: Trainer, step: StepRecord) -> None:
        self.bar.update()

    def on_fit_end(self, trainer: Trainer) -> None:
        self.bar.close()


class Evaluation(Callback):
    """Scores every task on `splits` at the end of each `every` epochs (and of the fit), into the
    history; with `checkpoint_path`, saves the weights whenever the mean validation score is the best
    so far (atomically)."""

    order = -10

    def __init__(
        self,
        splits: tuple[str, ...] = ("validation",),
        every: float | None = 1.0,
        checkpoint_path: str | os.PathLike | None = None,
        tasks: tuple[str, ...] | None = None,
    ):
        if every is not None and not (math.isfinite(every) and every > 0):
            raise MTLError(f"Evaluation(every=...) must be a positive number of epochs or None, got {every!r}.")
        self.splits, self.every, self.checkpoint_path, self.tasks = tuple(splits), every, checkpoint_path, tasks
        self.best = -math.inf

    def on_fit_start(self, trainer: Trainer) -> None:
        self._due = []
        if self.every is not None:
            every_steps = max(1, round(self.every * trainer.steps_per_epoch))
            self._due = list(range(every_steps, trainer.total_steps + 1, every_steps))
        self._due = set(self._due) | {trainer.total_steps}

    def on_step_end(self, trainer: Trainer, step: StepRecord) -> None:
        if trainer.step_in_fit in self._due:
            self.run(trainer)

    def run(self, trainer: Trainer) -> None:
        scores = []
        for split in self.splits:
            for task, result in trainer.evaluate_outcomes(split, self.tasks).items():
                trainer.history.add_eval(trainer, split, task, result.metrics)
                if split == "validation":
                    scores.append(result.metrics[PRIMARY_METRIC[result.level]])
        score = float(np.mean(scores)) if scores else -math.inf
        if self.checkpoint_path and score > self.best:
            self.best = score
            buffer = io.BytesIO()
            torch.save(trainer.model.state_dict(), buffer)
            atomic_write_bytes(self.checkpoint_path, buffer.getvalue())


class BestWeights(Callback):
    """Keeps, in memory, the weights of the evaluation with the best mean validation score of a fit
    (the Evaluation callback's scores, the primary metric of each task), and restores them when the
    fit ends: the best checkpoint, chosen on validation. Ties keep the earlier weights. `best` then
    holds the step, epoch and score of the weights restored (None when no validation score came)."""

    order = 0  # after Evaluation (-10), which scores the step first

    def __init__(self) -> None:
        self.best: dict | None = None
        self._state: dict[str, torch.Tensor] | None = None
        self._seen = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self._seen = len(trainer.history.evals)

    def on_step_end(self, trainer: Trainer, step: StepRecord) -> None:
        evals = trainer.history.evals
        new = [e for e in evals[self._seen :] if e["split"] == "validation" and e["step"] == trainer.global_step]
        self._seen = len(evals)
        if not new:
            return
        levels = {name: task.level for name, task in trainer.tasks.items()}
        score = float(np.mean([e[PRIMARY_METRIC[levels[e["task"]]]] for e in new]))
        if self.best is None or score > self.best["validation"]:
            self.best = {"step": trainer.global_step, "epoch": new[0]["epoch"], "validation": score}
            self._state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._state is not None:
            trainer.model.load_state_dict(self._state)
            self._state = None


class PeakMemory(Callback):
    """Peak memory of each fit, measured one way per device: CUDA's allocator peak, or the process's
    peak resident set size (Linux: VmHWM, reset at the start of the fit; elsewhere sampled)."""

    order = -30

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.method = ""

    def on_fit_start(self, trainer: Trainer) -> None:
        self.device = trainer.device
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return
        try:
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")  # resets VmHWM, the kernel's peak-RSS mark, for this process
            self.method = "peak RSS of the process during the fit (VmHWM)"
            self._thread = None
        except OSError:
            self.method = "peak RSS of the process during the fit (sampled)"
            self._peak = psutil.Process().memory_info().rss
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, process.memory_info().rss)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is None:
            status = open("/proc/self/status").read()
            peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, psutil.Process().memory_info().rss)
        trainer.state.peak_memory_mb = max(trainer.state.peak_memory_mb, peak / 2**20)
        trainer.state.memory_method = self.method


@dataclass
class Stage:
    """One stage of gradual unfreezing: the groups it unfreezes, its length, and its rate scale."""

    groups: list[str]
    epochs: float
    rate_scale: float = 1.0
    name: str = field(default="")


class GradualUnfreezing(Callback):
    """ULMFiT's gradual unfreezing inside one fit: at each stage boundary, unfreeze the stage's groups
    (they join the optimizer at their discriminative rates), scale every rate by the stage's
    `rate_scale` (the top rate lowered from stage to stage), and, with `restart_schedule`, start a
    new slanted triangular cycle for the stage, as fastai's one fit per stage does.

    Fit for `total_epochs`; at the start, every group not in the first stage is frozen.
    """

    order = 10

    def __init__(self, stages: list[Stage], restart_schedule: bool = True):
        if not stages:
            raise MTLError("GradualUnfreezing needs at least one stage.")
        for stage in stages:
            positive = [math.isfinite(v) and v > 0 for v in (stage.epochs, stage.rate_scale)]
            if not all(positive):
                raise MTLError(f"Every stage needs epochs > 0 and rate_scale > 0, got {stage}.")
        self.stages, self.restart_schedule = stages, restart_schedule

    @property
    def total_epochs(self) -> float:
        return sum(s.epochs for s in self.stages)

    def on_fit_start(self, trainer: Trainer) -> None:
        if not math.isclose(trainer.fit_epochs, self.total_epochs, rel_tol=1e-6):
            raise MTLError(
                f"GradualUnfreezing's stages add up to {self.total_epochs} epochs, but fit runs "
                f"{trainer.fit_epochs}. Call trainer.fit({self.total_epochs})."
            )
        ends = np.cumsum([s.epochs for s in self.stages]) * trainer.steps_per_epoch
        self._starts = [0, *[max(1, round(e)) for e in ends[:-1]]]
        self._check_every_stage_has_a_step(trainer)
        trainer.freeze("all")
        self._enter(trainer, 0)

    def _check_every_stage_has_a_step(self, trainer: Trainer) -> None:
        """Refuse a plan in which a stage would get no step: its groups would never train (or, if entered
        together with the next stage, train at that stage's rates), unlike the plan says."""
        lengths = np.diff([*self._starts, trainer.total_steps])
        if (lengths >= 1).all():
            return
        empty = int(np.argmin(lengths >= 1))
        stage = self.stages[empty]
        raise MTLError(
            f"GradualUnfreezing has {len(self.stages)} stages but this fit has only "
            f"{trainer.total_steps} optimizer steps ({trainer.steps_per_epoch} per epoch, "
            f"{trainer.fit_epochs:g} epochs), and stage {empty + 1} (+{','.join(stage.groups)}, "
            f"{stage.epochs:g} epochs) would get none. Every stage needs at least one step: train for "
            "more epochs (a larger epochs_per_stage, or Recipe.epochs), use fewer stages, or a smaller "
            "batch size."
        )

    def _enter(self, trainer: Trainer, index: int) -> None:
        stage = self.stages[index]
        trainer.unfreeze(*stage.groups)
        trainer.scale_rates(stage.rate_scale)
        end = self._starts[index + 1] if index + 1 < len(self._starts) else trainer.total_steps
        if self.restart_schedule:
            trainer.schedule.restart(max(1, end - self._starts[index]))
        trainer.state.stage = stage.name or "+" + ",".join(stage.groups)
        self.current = index

    def on_step_end(self, trainer: Trainer, step: StepRecord) -> None:
        # every stage that is due, in order: none is skipped even if several starts were to coincide
        while self.current + 1 < len(self.stages) and trainer.step_in_fit >= self._starts[self.current + 1]:
            self._enter(trainer, self.current + 1)


def ulmfit_stages(
    trainer_or_model: Trainer | MultiTaskModel,
    n_stages: int = 4,
    epochs_per_stage: float = 1.0,
    rate_scales: tuple[float, ...] | None = None,
) -> list[Stage]:
    """Stages as fastai teaches ULMFiT: the heads, then the backbone from the top in a few chunks,
    about an epoch each, the top rate lowered at every stage (2e-2, 1e-2, 5e-3, then 1e-3 in fastai's
    example: scales 1, 1/2, 1/4, 1/20)."""
    model = getattr(trainer_or_model, "model", trainer_or_model)
    groups = gradual_unfreezing_stages(model, n_stages)
    scales = rate_scales or tuple([1.0, 0.5, 0.25, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05][: len(groups)])
    if len(scales) != len(groups):
        raise MTLError(f"rate_scales needs one scale per stage ({len(groups)}), got {len(scales)}.")
    return [Stage(g, epochs_per_stage, s) for g, s in zip(groups, scales)]
