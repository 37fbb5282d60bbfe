"""`TrainConfig`: everything a training run depends on, checked when it is built, so that a value
that would train wrong is refused with the allowed range instead of failing (or not) mid-run."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields

from .batches import SAMPLING
from .optim import DEFAULT_FACTOR

SEED_RANGE = 2**32  # numpy's seeds lie in [0, 2**32 - 1]; derived seeds wrap around to stay there


def _finite(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _weights(value: object) -> bool:
    return value is None or (isinstance(value, Mapping) and all(_finite(w) and w >= 0 for w in value.values()))


def _device(value: object) -> bool:
    return isinstance(value, str) and (value in ("auto", "cpu", "cuda") or value.startswith("cuda:"))


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
    cache_frozen_layers: bool = False  # compute the frozen lower layers once per data set (mtl_helpers.layer_cache)
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
        """None if field `name` holds an allowed value, else the value and what is allowed."""
        value = getattr(self, name)
        rules = {
            "epochs": (_finite(value) and value > 0, "a finite number of epochs > 0 (fractions allowed)"),
            "batch_size": (_count(value) and value >= 1, "an integer >= 1"),
            "eval_batch_size": (_count(value) and value >= 1, "an integer >= 1"),
            "lr": (_finite(value) and value > 0, "a finite rate > 0"),
            "factor": (
                _finite(value) and value > 0,
                "a finite divisor > 0 (1: one rate; 2.6: ULMFiT; 1/0.95: layer-wise decay 0.95)",
            ),
            "backbone_lr": (value is None or (_finite(value) and value > 0), "None or a finite rate > 0"),
            "weight_decay": (_finite(value) and value >= 0, "a finite number >= 0"),
            "schedule": (value in ("slanted", "constant"), "'slanted' or 'constant'"),
            "cut_frac": (_finite(value) and 0 < value < 1, "a fraction strictly between 0 and 1"),
            "ratio": (
                _finite(value) and value >= 1,
                "a finite number >= 1 (the peak rate over the lowest; 1: no warm-up)",
            ),
            "max_grad_norm": (
                value is None or (_finite(value) and value > 0),
                "None (no clipping) or a finite norm > 0",
            ),
            "sampling": (value in SAMPLING, " or ".join(repr(s) for s in SAMPLING)),
            "temperature": (_finite(value) and value > 0, "a finite number > 0"),
            "loss_weights": (_weights(value), "None or a mapping of task name to a finite weight >= 0"),
            "max_length": (_count(value) and value >= 2, "an integer >= 2"),
            "padding": (value in ("longest", "max_length"), "'longest' or 'max_length'"),
            "cache_frozen_layers": (
                isinstance(value, bool) and not (value and self.cache_features),
                "True or False, and False with cache_features=True (that caches the whole frozen backbone already)",
            ),
            "precision": (value in ("fp32", "bf16"), "'fp32' or 'bf16'"),
            "eval_every": (value is None or (_finite(value) and value > 0), "None or a finite number of epochs > 0"),
            "seed": (_count(value) and 0 <= value < SEED_RANGE, "an integer from 0 to 2**32 - 1, numpy's seed range"),
            "device": (_device(value), "'auto', 'cpu', 'cuda' or 'cuda:N'"),
            "sync_every": (_count(value) and value >= 1, "an integer >= 1"),
            "compile": (isinstance(value, bool), "True or False"),
        }
        if name in rules and not rules[name][0]:
            return f"{name}={value!r} (allowed: {rules[name][1]})"
        return None


__all__ = ["SEED_RANGE", "TrainConfig"]
