"""Run profiles in one place: smoke (CI, seconds), cpu (the stored book, a 2-core machine within an
hour), gpu (whole training sets, five seeds)."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """Data sizes, seeds and budgets that a notebook derives its settings from."""

    name: str
    seeds: int  # runs per compared arm; the noise rule needs several
    max_train: int | None  # training rows per task; None = the whole training split
    max_eval: int | None  # rows of validation and of test per task; None = all
    epochs: float  # the default budget of a training run, in epochs of its data
    batch_size: int
    eval_batch_size: int
    sweep_train: int | None  # training rows per task in learning-rate sweeps
    sweep_eval: int | None  # validation rows per task in sweeps
    sweep_seeds: int

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def size(self, n: int | None) -> int | None:
        """`n` capped at this profile's training size (None = no cap)."""
        if n is None:
            return self.max_train
        return n if self.max_train is None else min(n, self.max_train)


PROFILES = {
    "smoke": Profile("smoke", seeds=1, max_train=48, max_eval=32, epochs=1, batch_size=16, eval_batch_size=64,
                     sweep_train=32, sweep_eval=24, sweep_seeds=1),
    "cpu": Profile("cpu", seeds=3, max_train=500, max_eval=300, epochs=2, batch_size=32, eval_batch_size=128,
                   sweep_train=250, sweep_eval=200, sweep_seeds=1),
    "gpu": Profile("gpu", seeds=5, max_train=None, max_eval=None, epochs=3, batch_size=32, eval_batch_size=256,
                   sweep_train=4000, sweep_eval=None, sweep_seeds=2),
}


def get_profile(name: str = "cpu") -> Profile:
    """The named profile; the environment variable MTL_PROFILE overrides the name when set."""
    chosen = os.environ.get("MTL_PROFILE") or name
    if chosen not in PROFILES:
        raise ValueError(f"Unknown profile {chosen!r}; choose one of {', '.join(PROFILES)} (parameter `profile` or MTL_PROFILE).")
    return PROFILES[chosen]
