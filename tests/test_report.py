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
    assert noise(comparison(0.023, -0.008, 0.039)) == "unresolved"  # holds zero and large effects
    assert noise(comparison(0.001, -0.012, 0.015)) == "equivalent (within ±2 points)"


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


# --- Chapters 2 and 3 (N1): predictions_record and comparison_table ---
import dataclasses  # noqa: E402

from mtl_helpers.errors import MTLError  # noqa: E402
from mtl_helpers.report import comparison_table, predictions_record  # noqa: E402


def test_predictions_record_scores_each_row_by_its_label(trec):
    labels = {s: np.array([r["label"] for r in trec.splits[s]]) for s in ("validation", "test")}
    wrong_first = {s: np.where(np.arange(len(y)) == 0, (y + 1) % len(trec.label_names), y) for s, y in labels.items()}
    record = predictions_record("n1-check", "smoke", 0, "m", [trec], lambda t, s: wrong_first[s])
    for split, y in labels.items():
        assert record.outcome_array("trec", split).tolist() == [0] + [1] * (len(y) - 1)
        assert record.metric("trec", split) == (len(y) - 1) / len(y)


def test_predictions_record_refuses_wrong_lengths_and_token_tasks(trec):
    with pytest.raises(MTLError, match="return one label per row"):
        predictions_record("n1-check", "smoke", 0, "m", [trec], lambda t, s: [0, 1])
    token = dataclasses.replace(trec, name="tokens", level="token")
    with pytest.raises(MTLError, match="score token tasks with a Trainer"):
        predictions_record("n1-check", "smoke", 0, "m", [token], lambda t, s: [])


def test_comparison_table_has_a_row_per_name_and_columns_per_split():
    table = comparison_table(
        {"mean": {"validation": comparison(0.023, 0.008, 0.039), "test": comparison(0.01, -0.01, 0.03)}}
    )
    assert table.loc["mean"].to_dict() == {
        "validation, points (95% interval)": "+2.3 (+0.8 to +3.9)",
        "validation outcome": "higher",
        "test, points (95% interval)": "+1.0 (-1.0 to +3.0)",
        "test outcome": "unresolved",
    }
