"""What a Trainer knows about its run so far (`TrainerState`, as Hugging Face's TrainerState), and the
record of one optimizer step that callbacks receive (`StepRecord`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TrainerState:
    """The run's counters. `global_step`, `examples_seen`, `epochs_done` and `train_seconds` add up over
    every fit of one trainer; the `fit_*`/`step_in_fit`/`total_steps` fields describe the latest fit."""

    global_step: int = 0  # optimizer steps over all fits
    step_in_fit: int = 0  # optimizer steps of the current (or latest) fit
    epochs_done: float = 0.0  # over all fits; each step adds 1 / steps_per_epoch of its fit
    steps_per_epoch: int = 0  # of the latest fit: the batches of its tasks' training data
    total_steps: int = 0  # of the latest fit: round(fit_epochs * steps_per_epoch), at least 1
    fit_epochs: float = 0.0  # what the latest fit was asked to run
    stage: str = ""  # a label of what is trained now (fit's `stage`; GradualUnfreezing names its stages)
    fits_started: int = 0  # each fit draws its own seed from it
    fit_completed: bool = True  # False from a fit's start until it ran all its steps
    examples_seen: int = 0  # training examples over all fits
    train_seconds: float = 0.0  # host time spent in steps, over all fits
    peak_memory_mb: float = 0.0  # the highest peak of any fit (PeakMemory sets it)
    memory_method: str = ""  # how that peak was measured
    # Groups that received at least one optimizer update, each with the highest learning rate actually
    # applied to it (after the schedule) at such a step: what records call `trained`.
    trained_groups: dict[str, float] = field(default_factory=dict)


@dataclass
class StepRecord:
    """One optimizer step, as `Callback.on_step_end` receives it. The loss stays a tensor (on the
    trainer's device) so that recording it costs no host synchronisation; `lr` holds the rate of each
    optimizer group at this step."""

    step: int
    task: str
    loss: torch.Tensor
    lr: dict[str, float]
    stage: str

    def as_dict(self) -> dict:
        """The plain dict that `History.steps` holds (the loss still a tensor until History reads it)."""
        return {"step": self.step, "task": self.task, "loss": self.loss, "lr": self.lr, "stage": self.stage}


def read_state(name: str) -> property:
    """A read-only property of a Trainer that reads `trainer.state.<name>`, so that existing readers
    (records, notebooks) keep `trainer.global_step` while the counters live in one place."""

    def read(trainer) -> object:
        return getattr(trainer.state, name)

    return property(read, doc=f"The run's `{name}` (read-only; see TrainerState).")


__all__ = ["StepRecord", "TrainerState", "read_state"]
