"""How the pages write numbers: one definition each, checked on known values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtl_helpers.report import accuracy_table, interval, mean_sd, noise, rate, sd
from mtl_helpers.stats import Comparison


def comparison(effect: float, low: float, high: float) -> Comparison:
    return Comparison("a", "b", effect, low, high, 3, 3, True, 100)


def test_mean_sd_states_the_spread_in_points_and_leaves_it_out_for_one_seed():
    assert mean_sd([0.80, 0.90]) == "85.0% ± 7.1"
    assert mean_sd([0.80, 0.90], percent=False) == "85.0 ± 7.1"
    assert mean_sd([0.853]) == "85.3%"
    assert sd([0.5]) == 0.0 and sd([1.0, 3.0]) == pytest.approx(np.sqrt(2))


def test_intervals_and_noise_words_follow_the_comparison():
    assert interval(comparison(0.023, 0.008, 0.039)) == "+2.3 (+0.8 to +3.9)"
    assert noise(comparison(0.023, 0.008, 0.039)) == "beyond the noise"
    assert noise(comparison(0.023, -0.008, 0.039)) == "within the noise"


@pytest.mark.parametrize(("value", "text"), [(1e-4, "1e-4"), (3e-5, "3e-5"), (2e-2, "2e-2"), (10.0, "1e1")])
def test_rates_are_written_as_people_write_them(value, text):
    assert rate(value) == text


def test_accuracy_table_has_a_cell_per_task_and_split(monkeypatch):
    frame = pd.DataFrame(
        {"t mean": [0.5], "t sd": [0.1], "mean": [0.5], "mean sd": [0.1], "seeds": [2]},
        index=pd.Index(["arm"], name="arm"),
    )
    monkeypatch.setattr("mtl_helpers.report.summarize", lambda arms, split, tasks: frame)
    table = accuracy_table({"arm": [object(), object()]}, ["t"], splits=("test",))
    assert table.loc["arm", "t test"] == "50.0% ± 10.0" and table.loc["arm", "seeds"] == 2
