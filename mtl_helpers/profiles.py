"""Run profiles in one place: smoke (CI, seconds), cpu (the stored book), gpu (full data)."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Data sizes and budgets that a notebook derives its settings from."""

    name: str
    max_train: int | None  # rows per task; None = the whole training split
    max_eval: int | None  # rows of validation/test per task
    epochs: int
    batch_size: int
    eval_batch_size: int = 128


PROFILES = {
    "smoke": Profile("smoke", max_train=64, max_eval=48, epochs=1, batch_size=16),
    "cpu": Profile("cpu", max_train=2000, max_eval=500, epochs=3, batch_size=32),
    "gpu": Profile("gpu", max_train=None, max_eval=None, epochs=4, batch_size=32, eval_batch_size=256),
}


def get_profile(name: str = "cpu") -> Profile:
    """The named profile; the environment variable MTL_PROFILE overrides the name when set."""
    chosen = os.environ.get("MTL_PROFILE") or name
    if chosen not in PROFILES:
        raise ValueError(f"Unknown profile {chosen!r}; choose one of {', '.join(PROFILES)} (parameter `profile` or MTL_PROFILE).")
    return PROFILES[chosen]
