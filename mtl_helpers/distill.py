"""Learning without Forgetting (Li and Hoiem, 2016): while the model trains on new tasks, the outputs
of the heads it must not forget are kept close to those of a frozen copy of the model from before
(the teacher), measured on the new tasks' own inputs. No data of the protected tasks is needed.

For every batch of a task that is not protected, the loss gains

    weight * T^2 * KL( softmax(teacher / T) || softmax(student / T) )

summed over the protected heads (T: the temperature; the T^2 keeps the gradient's scale independent
of T, as in knowledge distillation). Batches of a protected task keep the plain loss.
"""

from __future__ import annotations

import copy
import itertools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .encoder import mean_pool
from .errors import MTLError
from .model import MultiTaskModel
from .train import Trainer

LWF_WEIGHT = 1.0  # Li and Hoiem's lambda_o
LWF_TEMPERATURE = 2.0  # their T


def head_outputs(
    model: MultiTaskModel, batch: Mapping[str, torch.Tensor], tasks: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Logits of several heads from one pass of the backbone (a sentence head reads the mean-pooled
    states, a token head every token state), as `model(task, batch)` computes them one at a time."""
    tasks = list(tasks)
    if "features" in batch:  # cached sentence embeddings of a frozen backbone
        states, pooled = None, batch["features"]
    else:
        states = model.token_states(batch)
        pooled = mean_pool(states, batch["attention_mask"])
    out = {}
    for task in tasks:
        head = model.head(task)
        if head.level == "token":
            if states is None:
                raise MTLError(
                    f"Head {task!r} is a token head, but the batch holds cached sentence features only; "
                    "train without cache_features."
                )
            out[task] = head(states)
        else:
            out[task] = head(pooled)
    return out


def distillation_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), averaged over examples (or over the real
    tokens given by `mask` for token-level logits)."""
    log_s = F.log_softmax(student.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher.float() / temperature, dim=-1)
    per = (log_t.exp() * (log_t - log_s)).sum(-1)
    if per.dim() > 1:  # token logits: keep real tokens only
        per = per[mask.bool()] if mask is not None else per.reshape(-1)
    return per.mean() * temperature**2


def _check_positive(name: str, value, allow_zero: bool) -> float:
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0 (0: plain training, no distillation)" if allow_zero else "> 0"
        raise MTLError(
            f"DistillationTrainer({name}={value!r}): the {name} must be a finite number {bound}; "
            f"Li and Hoiem use weight={LWF_WEIGHT:g} and temperature={LWF_TEMPERATURE:g}."
        )
    return float(value)


def _storages(model: torch.nn.Module) -> dict[tuple[str, int], str]:
    """Where each parameter and buffer keeps its data (device, storage address), with the tensor's name."""
    tensors = itertools.chain(model.named_parameters(), model.named_buffers())
    return {
        (str(t.device), t.untyped_storage().data_ptr()): name for name, t in tensors if t.untyped_storage().nbytes()
    }


def _check_no_shared_storage(student: MultiTaskModel, teacher: MultiTaskModel) -> None:
    """Refuse a teacher that shares tensors with the student (a shallow copy, or a model built around
    the same encoder): freezing the teacher would freeze them in the student too, and training the
    student would move the teacher."""
    theirs = _storages(teacher)
    shared = [name for key, name in _storages(student).items() if key in theirs]
    if shared:
        raise MTLError(
            f"The teacher shares {len(shared)} tensors with the student (e.g. {shared[:2]}), so it is "
            "no separate copy: freezing it would freeze them in the student, and training the student "
            "would move the teacher. Leave teacher=None (the trainer copies the model), or pass "
            "copy.deepcopy(model)."
        )


class DistillationTrainer(Trainer):
    """A Trainer that protects the heads named in `protect` with Learning without Forgetting.

    `teacher`: the model whose outputs are kept (default: a copy of `model` taken now, before any
    training); it is frozen, runs in eval mode and under no_grad, and never changes. The distillation
    term is added to the loss of every batch of a task that is not protected."""

    def __init__(
        self,
        model: MultiTaskModel,
        tokenizer,
        tasks,
        config=None,
        callbacks=(),
        *,
        protect: str | Sequence[str],
        teacher: MultiTaskModel | None = None,
        weight: float = LWF_WEIGHT,
        temperature: float = LWF_TEMPERATURE,
    ):
        self.distill_weight = _check_positive("weight", weight, allow_zero=True)
        self.temperature = _check_positive("temperature", temperature, allow_zero=False)
        self.protect = [protect] if isinstance(protect, str) else list(protect)
        if not self.protect:
            raise MTLError("DistillationTrainer(protect=...) needs the name of at least one head to protect.")
        for name in self.protect:
            model.head(name)  # raises, naming the model's heads, when there is none
        if teacher is model:
            raise MTLError(
                "The teacher must be a separate copy of the model (it must not train); "
                "leave teacher=None to copy the model as it is now."
            )
        if teacher is not None:
            _check_no_shared_storage(model, teacher)
        if config is not None and config.cache_frozen_layers:
            raise MTLError(
                "DistillationTrainer cannot use cache_frozen_layers: the teacher would read the student's "
                "cached lower-layer states, which are its own only while their weights agree. Set "
                "cache_frozen_layers=False."
            )
        super().__init__(model, tokenizer, tasks, config, callbacks)
        if all(name in self.protect for name in self.tasks):
            raise MTLError(
                f"Every task of this trainer ({list(self.tasks)}) is protected, so no batch would be "
                "distilled; train on at least one task that is not in `protect`."
            )
        self.teacher = copy.deepcopy(model) if teacher is None else teacher
        for name in self.protect:
            mine, theirs = model.head(name), self.teacher.head(name)
            if (mine.level, mine.num_labels) != (theirs.level, theirs.num_labels):
                raise MTLError(
                    f"The teacher's head {name!r} ({theirs.level}, {theirs.num_labels} classes) differs "
                    f"from the student's ({mine.level}, {mine.num_labels} classes)."
                )
        self.teacher.requires_grad_(False)
        self.teacher.to(self.device)
        self.teacher.eval()

    def distillation_term(
        self, batch: Mapping[str, torch.Tensor], student: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """weight * T^2 * KL(teacher || student) summed over the protected heads, on this batch.
        `student`: the student's logits of the protected heads, when already computed."""
        if student is None:
            student = head_outputs(self.model, batch, self.protect)
        with torch.no_grad():
            self.teacher.eval()
            teacher = head_outputs(self.teacher, batch, self.protect)
        mask = batch.get("attention_mask")
        total = sum(distillation_kl(student[n], teacher[n], self.temperature, mask) for n in self.protect)
        return self.distill_weight * total

    def loss(self, task: str, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if task in self.protect or self.distill_weight == 0:
            return super().loss(task, batch)
        outputs = head_outputs(self.model, batch, [task, *self.protect])  # one backbone pass for all heads
        return self.task_loss(task, outputs[task], batch) + self.distillation_term(batch, outputs)

    def settings(self) -> dict:
        return {"protect": list(self.protect), "weight": self.distill_weight, "temperature": self.temperature}

    def result(self, scenario: str, profile: str, splits: Iterable[str] = ("validation", "test"), **extra):
        extra.setdefault("distillation", self.settings())
        return super().result(scenario, profile, splits, **extra)


__all__ = ["DistillationTrainer", "LWF_TEMPERATURE", "LWF_WEIGHT", "distillation_kl", "head_outputs"]
