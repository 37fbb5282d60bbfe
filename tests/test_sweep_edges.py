"""Sweeps that do not stop at their edges (mtl_helpers.sweeps): a best point on an edge of a knob's grid
extends that knob one grid step at a time until the best point is inside, or a limit is reached and said."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from mtl_helpers import MTLError, RunRecord, TaskEvaluation
from mtl_helpers.sweeps import Axis, run_sweep

ROWS = [{"text": f"validation sentence {i}", "label": i % 2} for i in range(4)]


def record(seed: int, score: float, rows=ROWS) -> RunRecord:
    outcomes = np.array([1, 0, 1, 0], dtype=np.int8)
    task = SimpleNamespace(name="trec", level="sentence", splits={"validation": rows}, sizes=lambda: {"validation": 4})
    result = TaskEvaluation("trec", "validation", "sentence", {"accuracy": score}, outcomes, 0.0)
    return RunRecord.from_outcomes("sweep", "cpu", seed, "m", {"trec": task}, {"validation": {"trec": result}})


def fake_runner(score_of, seeds=(0, 1)):
    """run_point for run_sweep: the recipe is the point itself; each seed scores score_of(point)."""
    calls = []

    def run_point(name, point):
        calls.append((name, point))
        return [record(s, score_of(point)) for s in seeds]

    return run_point, calls


def peaked(best: float):
    """A validation curve over log rate with its top at `best`."""
    return lambda point: 0.9 - 0.1 * abs(math.log10(point[0] if isinstance(point, tuple) else point) - math.log10(best))


def test_an_interior_best_point_runs_the_grid_only():
    run_point, calls = fake_runner(peaked(1e-4))
    sweep = run_sweep("s", [Axis("rate", (1e-5, 3e-5, 1e-4, 3e-4))], lambda r: r, run_point)
    assert len(calls) == 4 and sweep.chosen == 1e-4
    assert sweep.edges == {"rate": "interior"} and sweep.interior
    assert sweep.seeds == [0, 1] and list(sweep.table.index) == [1e-5, 3e-5, 1e-4, 3e-4]


def test_a_best_point_at_the_top_edge_extends_the_grid_until_it_is_inside():
    run_point, calls = fake_runner(peaked(1e-3))
    sweep = run_sweep("s", [Axis("rate", (1e-5, 3e-5, 1e-4, 3e-4))], lambda r: r, run_point, extensions=3)
    assert [p for _, p in calls][4:] == [1e-3, 3e-3]  # 1e-3 was best at the new edge, so one more step
    assert sweep.chosen == 1e-3 and sweep.edges == {"rate": "interior"}
    assert list(sweep.table.index) == sorted(sweep.table.index)  # extensions sorted into place


def test_a_best_point_at_the_bottom_edge_extends_downwards():
    run_point, calls = fake_runner(peaked(3e-6))
    sweep = run_sweep("s", [Axis("rate", (1e-5, 3e-5, 1e-4, 3e-4))], lambda r: r, run_point, extensions=3)
    assert [p for _, p in calls][4:] == [3e-6, 1e-6] and sweep.chosen == 3e-6 and sweep.interior


def test_an_edge_that_cannot_be_extended_is_reported_not_hidden():
    run_point, _ = fake_runner(peaked(1.0))
    sweep = run_sweep("s", [Axis("rate", (1e-3, 3e-3, 1e-2, 3e-2))], lambda r: r, run_point, extensions=1)
    assert sweep.chosen == 0.1 and not sweep.interior
    assert "highest value 0.1" in sweep.edges["rate"] and "1 extension" in sweep.edges["rate"]
    run_point, _ = fake_runner(peaked(1.0))
    limited = run_sweep("s", [Axis("rate", (1e-3, 3e-3, 1e-2, 3e-2), high=0.05)], lambda r: r, run_point)
    assert limited.chosen == 0.03 and "limit" in limited.edges["rate"]
    assert "chosen on validation" in limited.edge_note() and "2 seed(s)" in limited.edge_note()


def test_no_extensions_reports_the_edge():
    run_point, calls = fake_runner(peaked(1.0))
    sweep = run_sweep("s", [Axis("rate", (1e-3, 3e-3))], lambda r: r, run_point, extensions=0)
    assert len(calls) == 2 and not sweep.interior


def test_two_knobs_extend_along_the_edge_knob_at_the_other_knobs_choice():
    def score(point):
        rate, epochs = point
        return 0.9 - 0.1 * abs(math.log10(rate) + 4) - 0.01 * abs(math.log2(epochs) - math.log2(10))

    run_point, calls = fake_runner(score)
    axes = [Axis("rate", (1e-6, 3e-6, 1e-5, 3e-5)), Axis("epochs", (5, 10, 20, 40))]
    sweep = run_sweep("s", axes, lambda *point: point, run_point, extensions=4)
    extra = [p for _, p in calls][16:]
    assert extra[0] == (1e-4, 10)  # one step past the rate edge, at the chosen epochs
    assert sweep.chosen == (1e-4, 10) and sweep.interior
    assert calls[16][0] == "s-0.0001-10"  # the record names read as the old sweeps' did


def test_whole_number_knobs_stay_whole():
    axis = Axis("epochs", (5, 10, 20, 40))
    assert axis.beyond(40, "high") == 80 and isinstance(axis.beyond(40, "high"), int)
    assert Axis("rate", (1e-5, 3e-5, 1e-4)).beyond(1e-4, "high") == 3e-4
    assert Axis("rate", (1e-5, 3e-5, 1e-4)).beyond(1e-5, "low") == 3e-6


def test_a_one_value_knob_is_fixed_and_never_extended():
    run_point, calls = fake_runner(lambda p: 0.5 + p[0])
    sweep = run_sweep("s", [Axis("rate", (1e-3, 1e-2, 1e-1)), Axis("epochs", (3,))], lambda *p: p, run_point)
    assert sweep.edges["epochs"] == "fixed at 3" and all(p[1] == 3 for _, p in calls)


@pytest.mark.parametrize("values", [(), (3e-5, 1e-5), (1e-5, 1e-5), (0.0, 1.0)])
def test_bad_axes_are_refused(values):
    with pytest.raises(MTLError):
        Axis("rate", values)


def test_points_scored_on_different_validation_rows_are_refused():
    other = [{"text": f"other sentence {i}", "label": i % 2} for i in range(4)]

    def run_point(name, point):
        return [record(0, 0.5, rows=other if point == 3e-5 else ROWS)]

    with pytest.raises(MTLError, match="other 'trec' validation rows"):
        run_sweep("s", [Axis("rate", (1e-5, 3e-5, 1e-4))], lambda r: r, run_point)


def test_the_sweep_remembers_the_rows_that_chose_its_point():
    run_point, _ = fake_runner(peaked(1e-4))
    sweep = run_sweep("s", [Axis("rate", (1e-5, 3e-5, 1e-4, 3e-4))], lambda r: r, run_point)
    assert sweep.selected_on == "validation" and sweep.selection == record(0, 0.5).examples["validation"]
