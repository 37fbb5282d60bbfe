"""Chapter 4's phase 2, shared with chapter 11 (mtl_helpers.phase2), and sweeps that reuse a point
another sweep ran (`arms.tuned_sweep(known=...)`)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from mtl_helpers import MTLError, RunRecord, TaskEvaluation, arms, get_profile
from mtl_helpers.leakage import normalize_text
from mtl_helpers.phase2 import curve_frame, curve_points, unseen_rows
from mtl_helpers.recipes import Recipe
from mtl_helpers.sweeps import Axis

from conftest import data_dir

ROWS = [{"text": f"validation sentence {i}", "label": i % 2} for i in range(4)]


def record(scenario: str, seed: int, score: float, **extra) -> RunRecord:
    task = SimpleNamespace(name="trec", level="sentence", splits={"validation": ROWS}, sizes=lambda: {"validation": 4})
    result = TaskEvaluation("trec", "validation", "sentence", {"accuracy": score}, np.array([1, 0, 1, 0]), 0.0)
    made = RunRecord.from_outcomes(scenario, "cpu", seed, "m", {"trec": task}, {"validation": {"trec": result}})
    made.extra.update(extra)
    return made


def test_unseen_rows_are_new_text_with_the_same_evaluation_rows():
    data_dir()
    profile = get_profile("cpu")
    (task,) = arms.load_tasks(["trec"], profile)
    unseen, fresh = unseen_rows(task, 120, profile)
    assert fresh and len(unseen.splits["train"]) == 120
    seen = {normalize_text(r["text"]) for r in task.splits["train"]}
    assert not seen & {normalize_text(r["text"]) for r in unseen.splits["train"]}
    for split in ("validation", "test"):
        assert unseen.splits[split] == task.splits[split]
    assert len(task.splits["train"]) == profile.max_train  # the phase-1 task is left as it was
    again, _ = unseen_rows(task, 120, profile)
    assert again.splits["train"] == unseen.splits["train"]  # the same rows every time


def test_unseen_rows_of_a_task_holding_every_row_is_that_task():
    data_dir()
    profile = replace(get_profile("cpu"), max_train=None)
    (task,) = arms.load_tasks(["trec"], profile)
    same, fresh = unseen_rows(task, 50, profile)
    assert same is task and not fresh


@pytest.mark.parametrize("rows", [0, -3, 2.5, True, "100"])
def test_unseen_rows_rejects_a_bad_count(rows):
    with pytest.raises(MTLError, match="whole number of rows"):
        unseen_rows(SimpleNamespace(name="trec", splits={"train": []}), rows, get_profile("cpu"))


def test_curve_points_count_the_rows_seen_and_keep_one_task():
    history = SimpleNamespace(
        evals=[
            {"epoch": 1.0, "task": "trec", "accuracy": 0.8},
            {"epoch": 1.0, "task": "sst2", "accuracy": 0.7},
            {"epoch": 2.0, "task": "trec", "accuracy": 0.75},
        ]
    )
    points = curve_points(history, "trec", "accuracy", 250)
    assert points == [
        {"epoch": 1.0, "b_examples": 250, "accuracy": 0.8},
        {"epoch": 2.0, "b_examples": 500, "accuracy": 0.75},
    ]


def test_curve_frame_starts_each_seed_at_its_phase_one_score():
    before = [record("joint", s, 0.9 - 0.1 * s) for s in (0, 1)]
    curve = lambda a: [{"b_examples": 250, "accuracy": a}, {"b_examples": 500, "accuracy": a - 0.05}]  # noqa: E731
    after = [record("phase-2", 1, 0.5, curve=curve(0.7)), record("phase-2", 0, 0.5, curve=curve(0.85))]
    frame = curve_frame(before, after, "trec", "accuracy")
    by_seed = {s: list(f["accuracy"]) for s, f in frame.groupby("seed")}
    assert by_seed[0] == pytest.approx([0.9, 0.85, 0.8])
    assert by_seed[1] == pytest.approx([0.8, 0.7, 0.65])
    assert list(frame[frame.seed == 0]["b_examples"]) == [0, 250, 500]


def test_curve_frame_names_a_missing_phase_one_seed_and_a_record_without_a_curve():
    with pytest.raises(MTLError, match=r"no phase-1 record for seed\(s\) \[3\]"):
        curve_frame([record("joint", 0, 0.9)], [record("phase-2", 3, 0.5, curve=[])], "trec", "accuracy")
    with pytest.raises(MTLError, match="keeps no curve"):
        curve_frame([record("joint", 0, 0.9)], [record("phase-2", 0, 0.5)], "trec", "accuracy")


def test_a_sweep_reuses_the_records_of_a_point_another_sweep_ran(monkeypatch):
    profile = get_profile("cpu")
    trained = []

    def fake_run_recipe(name, recipe, tasks, seeds, profile, log=None):
        trained.append(recipe.lora_rank)
        return [record(name, s, 0.8 - abs(recipe.lora_rank - 4) / 100) for s in seeds]

    monkeypatch.setattr(arms, "run_recipe", fake_run_recipe)
    base = Recipe(train=("heads",), head_lr=1e-2, backbone_lr=1e-3, adapter="lora", lora_alpha=16)
    shared = [record("sweep-rate-0.001", s, 0.79) for s in range(profile.sweep_seeds)]
    sweep = arms.tuned_sweep(
        "sweep-rank",
        [Axis("rank", (2, 4, 8, 16), low=1)],
        lambda r: base.with_(lora_rank=r),
        [],
        profile,
        known={base.with_(lora_rank=8): shared},
    )
    assert sorted(trained) == [2, 4, 16]  # rank 8 was not trained again
    assert sweep.arms[8] == shared and sweep.chosen == 4 and sweep.interior


def test_a_sweep_refuses_known_records_of_other_seeds():
    profile = get_profile("cpu")
    base = Recipe(train=("heads",), head_lr=1e-2, backbone_lr=1e-3, adapter="lora")
    with pytest.raises(MTLError, match="have seeds"):
        arms.tuned_sweep(
            "sweep-rank",
            [Axis("rank", (2, 4))],
            lambda r: base.with_(lora_rank=r),
            [],
            profile,
            known={base.with_(lora_rank=2): [record("x", 5, 0.5)]},
        )
