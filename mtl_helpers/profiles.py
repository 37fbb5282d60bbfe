"""Run profiles in one place: smoke (CI, seconds), cpu (the stored book, a 2-core machine within an
hour), gpu (a free Colab T4, about 30 minutes a chapter: 4,000 rows per task, five seeds) and full
(whole training sets, five seeds: hours per chapter)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace

from .locations import is_book_results, results_root
from .params import ParameterError, parse_list


@dataclass(frozen=True)
class Profile:
    """Data sizes, seeds and budgets that a notebook derives its settings from."""

    name: str
    seeds: int  # runs per compared arm; the noise rule needs several
    max_train: int | None  # training rows per task; None = the whole training split
    max_eval: int | None  # rows of validation per task; None = all
    epochs: float  # the default budget of a training run, in epochs of its data
    batch_size: int
    eval_batch_size: int
    sweep_train: int | None  # training rows per task in learning-rate sweeps
    sweep_eval: int | None  # validation rows per task in sweeps
    sweep_seeds: int
    sizes: dict = field(default_factory=dict)  # chapter-specific sizes, by name
    # rows of test per task (verdicts are decided there); None = every leak-free test row
    max_test: int | None = None

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def seeds_or(self, seeds: list[int] | str | None) -> list[int]:
        """The notebook's `seeds` parameter, checked, or this profile's seeds when it is None.

        A list written as text ("[0, 1]", as `papermill -p seeds '[0, 1]'` passes it) is read as that list.
        """
        if seeds is None:
            return self.seed_list
        seeds = parse_list("seeds", seeds)
        if (
            not isinstance(seeds, (list, tuple))
            or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        ):
            raise ParameterError(
                f"seeds must be None or a non-empty list of integers >= 0, such as [0, 1, 2], got {seeds!r}."
            )
        if len(set(seeds)) != len(seeds):
            raise ParameterError(f"seeds must not repeat a seed, got {seeds!r}.")
        return list(seeds)

    def size(self, name: str):
        if name not in self.sizes:
            raise KeyError(f"Profile {self.name!r} has no size {name!r}; it has {sorted(self.sizes)}.")
        return self.sizes[name]


PROFILES = {
    "smoke": Profile(
        "smoke",
        seeds=1,
        max_train=16,
        max_eval=16,
        epochs=1,
        batch_size=8,
        eval_batch_size=64,
        sweep_train=16,
        sweep_eval=16,
        sweep_seeds=1,
        sizes={
            "ablation_train": 8,
            "low_data": (8,),
            "curve": (8, 16),
            "phase2_train": 8,
            "ner_train": 16,
            "sweep_points": 2,
            "sweep_extensions": 0,
        },
        max_test=16,
    ),
    "cpu": Profile(
        "cpu",
        seeds=5,
        max_train=250,
        max_eval=150,
        epochs=4,  # 2 x ceil(250 / 16) x 4 = 128 optimizer steps: a verdict needs 100 or more
        batch_size=16,
        eval_batch_size=128,
        sweep_train=100,
        sweep_eval=100,
        sweep_seeds=2,
        sizes={
            "ablation_train": 40,
            "low_data": (50, 125),
            "curve": (50, 125, 250),
            "phase2_train": 250,  # chapter 4: 7 epochs at batch 16 = 112 steps of Task B alone
            "ner_train": 250,
            "sweep_points": 4,
            "sweep_extensions": 2,
        },
    ),
    # Colab's free T4: sized for about 30 minutes a chapter. The estimate: a full fine-tuning step of
    # all-MiniLM-L6-v2 at batch 32 and about 25 tokens a row is 32 * 25 * 6 * 22.7M = 1.1e11 FLOPs
    # (bench/flops.py counts it exactly); at an assumed 5 TFLOP/s on a T4 (fp16 autocast, about a
    # third of its dense fp16 peak after launch overheads at this size) that is about 25 ms, so a run
    # of 4,000 rows per task over 3 epochs (750 steps) takes about 20 s and a chapter's 30-60 runs
    # (5 seeds per arm, sweeps of 4 points and 2 seeds) 15-30 minutes. No T4 has measured this yet.
    "gpu": Profile(
        "gpu",
        seeds=5,
        max_train=4000,
        max_eval=None,
        epochs=3,
        batch_size=32,
        eval_batch_size=256,
        sweep_train=2000,
        sweep_eval=None,
        sweep_seeds=2,
        sizes={
            "ablation_train": 2000,
            "low_data": (100, 300, 1000),
            "curve": (50, 150, 500, 1500, 4000),
            "phase2_train": 4000,
            "ner_train": 4000,
            "sweep_points": 4,
            "sweep_extensions": 2,
        },
    ),
    # Whole training sets (SST-2's 67,000 rows): hours of T4 time per chapter, for those who have it.
    "full": Profile(
        "full",
        seeds=5,
        max_train=None,
        max_eval=None,
        epochs=3,
        batch_size=32,
        eval_batch_size=256,
        sweep_train=4000,
        sweep_eval=None,
        sweep_seeds=2,
        sizes={
            "ablation_train": 2000,
            "low_data": (100, 300, 1000),
            "curve": (50, 150, 500, 1500, 5000, None),
            "phase2_train": None,
            "ner_train": None,
            "sweep_points": 4,
            "sweep_extensions": 2,
        },
    ),
}


def _check_profile_name(name: object, source: str) -> str:
    if not isinstance(name, str) or name not in PROFILES:
        raise ParameterError(f"Unknown profile {name!r} ({source}); choose one of {', '.join(PROFILES)}.")
    return name


# The profile sizes that count training rows, which MTL_CAP_ROWS caps; every other size (the number of sweep
# points) is the profile's structure and stays. A test checks that each size of each profile is in one of the two.
ROW_SIZES = frozenset({"ablation_train", "low_data", "curve", "phase2_train", "ner_train"})
STRUCTURE_SIZES = frozenset({"sweep_points", "sweep_extensions"})
ROW_CAP_VARIABLE = "MTL_CAP_ROWS"


def _cap(rows: int | None, cap: int) -> int:
    return cap if rows is None else min(rows, cap)  # None means all rows: all of the capped rows


def capped(profile: Profile, cap: int) -> Profile:
    """`profile` with every row count at most `cap`; None ("all rows") becomes `cap`.

    Seeds, sweep points, sweep seeds, epochs and batch sizes stay: a capped gpu profile runs the gpu profile's
    code paths on a few rows (`make gpu-structure`). A tuple of sizes keeps its length and order, so capping
    can repeat a size (the gpu curve at 32 rows is six times 32): the chapters reuse the stored runs of a
    repeated size, and a None in it becomes `cap`, which equals the capped max_train (the curve's "all" point).
    """
    sizes = {}
    for key, value in profile.sizes.items():
        if key not in ROW_SIZES:
            sizes[key] = value
        elif isinstance(value, tuple):
            sizes[key] = tuple(_cap(rows, cap) for rows in value)
        else:
            sizes[key] = _cap(value, cap)
    return replace(
        profile,
        max_train=_cap(profile.max_train, cap),
        max_eval=_cap(profile.max_eval, cap),
        max_test=_cap(profile.max_test, cap),
        sweep_train=_cap(profile.sweep_train, cap),
        sweep_eval=_cap(profile.sweep_eval, cap),
        sizes=sizes,
    )


def row_cap_from_environment() -> int | None:
    """The whole number of rows MTL_CAP_ROWS gives, or None when it is unset or empty."""
    text = os.environ.get(ROW_CAP_VARIABLE, "").strip()
    if not text:
        return None
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:
        raise ParameterError(
            f"The environment variable {ROW_CAP_VARIABLE}={text!r} is not a number of rows: set it to a whole "
            f"number >= 1, such as 32 (every row count of the profile is capped at it), or unset it."
        )
    return int(text)


def _refuse_capped_records_in_the_book() -> None:
    """Capped runs keep the profile's name in their records: kept out of the book's stored records."""
    if is_book_results(results_root()):
        raise ParameterError(
            f"{ROW_CAP_VARIABLE} is set, but the run records would go to the book's results folder, where "
            f"capped runs would pass for the profile's own: set MTL_RESULTS_DIR to a scratch folder (as "
            f"`make gpu-structure` does), or unset {ROW_CAP_VARIABLE}."
        )


def get_profile(name: str = "cpu") -> Profile:
    """The named profile, or the one the environment variable MTL_PROFILE names when it is set.

    Both names are checked, so a wrong `profile` parameter fails even where MTL_PROFILE is set. When both
    are valid and differ, the environment wins (one variable switches a whole run, whatever each notebook
    says) and one printed line says so: a contradiction is reported, never an error.
    When MTL_CAP_ROWS=N is set, every row count of the profile is capped at N (see `capped`), and a
    printed line says so.
    """
    _check_profile_name(name, "the notebook parameter `profile`")
    from_environment = os.environ.get("MTL_PROFILE")
    if from_environment:
        _check_profile_name(from_environment, "the environment variable MTL_PROFILE")
        if from_environment != name:
            print(f"MTL_PROFILE={from_environment} overrides profile={name!r}: using the {from_environment} profile.")
        name = from_environment
    cap = row_cap_from_environment()
    if cap is None:
        return PROFILES[name]
    _refuse_capped_records_in_the_book()
    print(f"{ROW_CAP_VARIABLE}={cap}: every row count of the {name} profile is capped at {cap} rows.")
    return capped(PROFILES[name], cap)
