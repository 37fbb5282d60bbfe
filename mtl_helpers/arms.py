"""The book's shared arms: loading the two tasks at a profile's sizes, rate sweeps on validation, and
the standard recipes. Chapters that need the same arm call the same function with the same
arguments, so a book run trains it once and the other chapters reuse its records."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import MTLError
from .leakage import rows_sharing_text
from .loading import load_task
from .tasks import SPLIT_SEED, TaskData
from .runs import sweep_table
from .profiles import Profile
from .recipes import Recipe, run_recipe
from .records import RunRecord
from .sweeps import Axis, Sweep, run_sweep

# Log grids on the 1-3 sequence; a profile takes a centred run of `sweep_points` of them, and a sweep
# whose best point lies on an edge goes on past it (`sweep_extensions`, mtl_helpers/sweeps.py).
BACKBONE_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)  # full fine-tuning: the top backbone rate
FULL_FT_HEAD_RATES = (1e-3, 1e-2)  # full fine-tuning: the heads' rate
PROBE_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # heads on a frozen backbone
PROBE_EPOCHS = (5, 10, 20, 40)
MAX_RATE = 0.3  # no sweep extends a learning rate beyond this


def load_tasks(
    names: Sequence[str],
    profile: Profile,
    max_train: int | None | str = "profile",
    max_eval: int | None | str = "profile",
) -> list[TaskData]:
    """Each named task at the profile's sizes (or the given ones; None = all rows)."""
    train = profile.max_train if max_train == "profile" else max_train
    evaluate = profile.max_eval if max_eval == "profile" else max_eval
    test = profile.max_test if max_eval == "profile" else evaluate
    return [load_task(name, max_train=train, max_eval=evaluate, max_test=test) for name in names]


def sweep_tasks(names: Sequence[str], profile: Profile) -> list[TaskData]:
    """The smaller subsets that rate sweeps use (validation only)."""
    return load_tasks(names, profile, profile.sweep_train, profile.sweep_eval)


def grid(values: Sequence, profile: Profile) -> list:
    """A centred, contiguous run of the profile's number of sweep points from `values` (all of them when
    there are fewer): contiguous, so a log grid keeps its even spacing."""
    n = min(len(values), profile.size("sweep_points"))
    start = (len(values) - n) // 2
    return list(values[start : start + n])


def sweep(
    prefix: str, recipes: Mapping[object, Recipe], tasks: Sequence[TaskData], profile: Profile, log=None
) -> tuple[pd.DataFrame, dict[object, list[RunRecord]]]:
    """Train every recipe on the sweep subsets (the profile's sweep seeds) and tabulate validation.
    A fixed set of points without edge extension; `tuned_sweep` is the book's rule."""
    seeds = list(range(profile.sweep_seeds))
    arms = {
        value: run_recipe(f"{prefix}-{_slug(value)}", recipe, tasks, seeds, profile, log=log)
        for value, recipe in recipes.items()
    }
    return sweep_table(arms), arms


def tuned_sweep(
    prefix: str,
    axes: Sequence[Axis],
    make_recipe,
    tasks: Sequence[TaskData],
    profile: Profile,
    log=None,
    known: Mapping[Recipe, Sequence[RunRecord]] | None = None,
) -> Sweep:
    """The book's sweep: the grid of `axes` over the profile's sweep seeds, chosen on validation, extended
    past an edge up to the profile's `sweep_extensions` times per knob and side (`run_sweep`).

    `known` maps recipes that another sweep already ran, on the same subsets and the same seeds, to their
    records: a point whose recipe is one of them takes those records instead of training again (a rank
    sweep at the rate a rate sweep chose shares that point with it). `run_sweep` checks that every point
    was chosen on the same validation examples."""
    seeds = list(range(profile.sweep_seeds))
    known = dict(known or {})
    for recipe, records in known.items():
        if sorted(r.seed for r in records) != seeds:
            raise MTLError(
                f"tuned_sweep({prefix!r}, known=...): the records given for {recipe} have seeds "
                f"{sorted(r.seed for r in records)}, the sweep's are {seeds}; give a sweep's own records."
            )

    def run_point(name: str, recipe: Recipe) -> list[RunRecord]:
        if recipe in known:
            return list(known[recipe])
        return run_recipe(name, recipe, tasks, seeds, profile, log=log)

    return run_sweep(prefix, axes, make_recipe, run_point, profile.size("sweep_extensions"))


def _slug(value) -> str:
    if isinstance(value, tuple):
        return "-".join(_slug(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def full_ft(profile: Profile, backbone_lr: float, head_lr: float, model_name: str | None = None, **changes) -> Recipe:
    """Everything trained from the first step, one backbone rate, the slanted triangular schedule."""
    return Recipe(
        train=("all",),
        head_lr=head_lr,
        backbone_lr=backbone_lr,
        epochs=profile.epochs,
        batch_size=profile.batch_size,
        model_name=model_name,
    ).with_(**changes)


def full_ft_sweep(task_names: Sequence[str], profile: Profile, model_name: str | None = None, log=None) -> Sweep:
    """The full fine-tuning sweep: (backbone rate, head rate) on the sweep subsets."""
    axes = (
        Axis("backbone rate", tuple(grid(BACKBONE_RATES, profile)), high=MAX_RATE),
        Axis("head rate", tuple(grid(FULL_FT_HEAD_RATES, profile)), high=MAX_RATE),
    )

    def make(backbone_lr: float, head_lr: float) -> Recipe:
        return full_ft(profile, backbone_lr, head_lr, model_name=model_name)

    return tuned_sweep("sweep-full-ft", axes, make, sweep_tasks(task_names, profile), profile, log=log)


def probe(profile: Profile, head_lr: float, epochs: float, model_name: str | None = None) -> Recipe:
    """Heads only, on cached features of the frozen backbone, at a constant rate."""
    return Recipe(
        train=("heads",),
        head_lr=head_lr,
        epochs=epochs,
        batch_size=profile.batch_size,
        schedule="constant",
        cache_features=True,
        model_name=model_name,
    )


def probe_sweep(task_names: Sequence[str], profile: Profile, model_name: str | None = None, log=None) -> Sweep:
    """Heads-only sweep over (rate, epochs) on the full training subsets (cheap with cached features)."""
    axes = (
        Axis("rate", tuple(grid(PROBE_RATES, profile)), high=MAX_RATE),
        Axis("epochs", tuple(grid(PROBE_EPOCHS, profile)), low=1, high=320),
    )

    def make(rate: float, epochs: int) -> Recipe:
        return probe(profile, rate, epochs, model_name)

    return tuned_sweep("sweep-probe", axes, make, load_tasks(task_names, profile), profile, log=log)


STANDARD_SPLITS = ("validation", "test", "train_eval")  # what the shared arms record


def ood_for(task_names: Sequence[str], profile: Profile) -> list[tuple[str, TaskData]]:
    """Out-of-distribution test sets the shared arms are also scored on: SST-2's head on Rotten
    Tomatoes' test split, without the rows that share text with SST-2's whole training split (both
    were cut from Rotten Tomatoes reviews, so about a third of them do)."""
    if "sst2" not in task_names:
        return []
    return [("sst2", clean_rotten_tomatoes(profile))]


@functools.lru_cache(maxsize=4)
def _clean_rt_rows(max_test: int | None) -> tuple[TaskData, list[dict], int, int]:
    rt = load_task("rotten_tomatoes", max_train=1)
    sst2_train = [r["text"] for r in load_task("sst2").splits["train"]]
    test = rt.splits["test"]
    shared = rows_sharing_text(sst2_train, [r["text"] for r in test])
    clean = [r for i, r in enumerate(test) if i not in shared]
    if max_test is not None and max_test < len(clean):
        keep = sorted(np.random.default_rng(SPLIT_SEED).permutation(len(clean))[:max_test].tolist())
        clean = [clean[i] for i in keep]
    return rt, clean, len(shared), len(test)


def clean_rotten_tomatoes(profile: Profile) -> TaskData:
    """Rotten Tomatoes with its test split limited to rows that share no text with SST-2's training
    split (then the profile's test size: every such row in the cpu and gpu profiles);
    `split_report["sst2_overlap"]` counts what was left out."""
    rt, clean, shared, total = _clean_rt_rows(profile.max_test)
    task = copy.copy(rt)
    task.splits = {**rt.splits, "test": [dict(r) for r in clean]}
    task.split_report = {
        **rt.split_report,
        "sst2_overlap": {"test_rows": total, "sharing_text_with_sst2_train": shared},
    }
    return task


def _standard_arm(scenario: str, sweep, make_recipe, task_names, profile, seeds, model_name, log):
    """An arm of the book: its settings chosen by `sweep` on validation, then one run per seed on the
    profile's data, scored on the standard splits and out of distribution."""
    tuned = sweep(task_names, profile, model_name, log=log)
    records = run_recipe(
        scenario,
        make_recipe(profile, *tuned.chosen, model_name=model_name),
        load_tasks(task_names, profile),
        seeds,
        profile,
        splits=STANDARD_SPLITS,
        ood=ood_for(task_names, profile),
        log=log,
    )
    return records, tuned.chosen, tuned


def full_ft_arm(
    task_names: Sequence[str], profile: Profile, seeds: Sequence[int], model_name: str | None = None, log=None
):
    """The book's full fine-tuning arm: rates from `full_ft_sweep`, then one run per seed on the
    profile's data. Returns (records, chosen (backbone rate, head rate), the Sweep)."""
    return _standard_arm("full-fine-tuning", full_ft_sweep, full_ft, task_names, profile, seeds, model_name, log)


def probe_arm(
    task_names: Sequence[str], profile: Profile, seeds: Sequence[int], model_name: str | None = None, log=None
):
    """The book's heads-only arm (a linear probe on the frozen backbone's cached features): rate and
    epochs from `probe_sweep`, then one run per seed. Returns (records, chosen (rate, epochs), the Sweep)."""
    return _standard_arm("head-only", probe_sweep, probe, task_names, profile, seeds, model_name, log)
