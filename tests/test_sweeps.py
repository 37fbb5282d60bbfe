"""Learning-rate sweeps: the table and its chosen value, thinning a rate grid to the profile, and the
rate each backbone depth gets from a spread."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from transformers.models.bert.modeling_bert import BertPooler

from conftest import tiny_bert
from mtl_helpers import MTLError, MultiTaskModel, RunRecord, SentenceHead, TaskEvaluation, arms
from mtl_helpers.runs import chosen_value, sweep_table
from mtl_helpers.optim import ULMFIT_SPREAD, discriminative_rates, spread_factor
from mtl_helpers.profiles import PROFILES


def run(seed: int, accuracy: dict[str, float | None]) -> RunRecord:
    """One run's record with the given validation accuracy per task (None: the metric is missing), built
    through the public helpers as a notebook builds a record without a Trainer."""
    outcomes = np.array([1, 0, 1, 0], dtype=np.int8)  # the table reads the metric, not the outcomes
    rows = [{"text": f"sentence {i}", "label": i % 2} for i in range(len(outcomes))]
    tasks = {
        t: SimpleNamespace(
            name=t, level="sentence", splits={"validation": rows}, sizes=lambda: {"validation": len(outcomes)}
        )
        for t in accuracy
    }
    results = {
        "validation": {
            t: TaskEvaluation(t, "validation", "sentence", {} if a is None else {"accuracy": a}, outcomes, 0.0)
            for t, a in accuracy.items()
        }
    }
    return RunRecord.from_outcomes("sweep", "cpu", seed, "m", tasks, results)


# ---------------------------------------------------------------- sweep_table and chosen_value


def test_one_knob_table_averages_seeds_then_tasks_and_chooses_the_best_mean():
    arms = {
        1e-5: [run(0, {"trec": 0.50, "sst2": 0.70}), run(1, {"trec": 0.60, "sst2": 0.70})],
        3e-5: [run(0, {"trec": 0.90, "sst2": 0.50}), run(1, {"trec": 0.90, "sst2": 0.60})],  # best trec only
        1e-4: [run(0, {"trec": 0.75, "sst2": 0.75}), run(1, {"trec": 0.85, "sst2": 0.65})],  # best mean
    }
    table = sweep_table(arms)
    assert list(table.index) == [1e-5, 3e-5, 1e-4]
    assert table.loc[1e-5, "trec"] == pytest.approx(0.55) and table.loc[3e-5, "sst2"] == pytest.approx(0.55)
    assert table["mean"].tolist() == pytest.approx([0.625, 0.725, 0.75])
    assert table["seeds"].tolist() == [2, 2, 2]
    assert table["chosen"].tolist() == [False, False, True]
    assert chosen_value(table) == 1e-4


def test_two_knob_table_has_one_index_level_per_knob_and_chooses_a_pair():
    arms = {
        (1e-5, 2): [run(0, {"t": 0.5})],
        (1e-5, 4): [run(0, {"t": 0.9})],
        (3e-5, 2): [run(0, {"t": 0.7})],
        (3e-5, 4): [run(0, {"t": 0.6})],
    }
    table = sweep_table(arms)
    assert isinstance(table.index, pd.MultiIndex) and table.index.nlevels == 2
    assert list(table.index) == list(arms)
    assert table.loc[(3e-5, 2), "mean"] == pytest.approx(0.7)
    assert table["chosen"].sum() == 1
    assert chosen_value(table) == (1e-5, 4)


@pytest.mark.parametrize(
    "values, kinds",
    [
        ([1e-5, 3e-5], (float,)),
        ([2, 4], (int,)),
        (["top", "all"], (str,)),
        ([(1e-5, 2), (3e-5, 4)], (float, int)),
    ],
)
def test_chosen_value_is_a_plain_python_value(values, kinds):
    """The chosen value goes into a recipe and into a record's JSON spec: numpy scalars must not leak out."""
    arms = {value: [run(0, {"t": 0.5 + 0.1 * i})] for i, value in enumerate(values)}
    chosen = chosen_value(sweep_table(arms))
    assert chosen == values[-1]
    parts = chosen if isinstance(chosen, tuple) else (chosen,)
    assert tuple(type(p) for p in parts) == kinds


def test_a_tie_chooses_exactly_one_value_the_first_swept():
    arms = {1e-5: [run(0, {"t": 0.5})], 3e-5: [run(0, {"t": 0.8})], 1e-4: [run(0, {"t": 0.8})]}
    table = sweep_table(arms)
    assert table["chosen"].tolist() == [False, True, False]
    assert chosen_value(table) == 3e-5


def test_a_value_with_a_missing_metric_is_never_chosen():
    arms = {
        1e-5: [run(0, {"a": 0.5, "b": 0.6})],
        3e-5: [run(0, {"a": None, "b": 0.9})],
        1e-4: [run(0, {"a": 0.7, "b": 0.7})],
    }
    with pytest.raises(MTLError, match="3e-05"):  # refused, naming the point without a validation score
        sweep_table(arms)


# ---------------------------------------------------------------- arms.grid: thinning a rate grid


def with_sweep_points(points: int):
    profile = PROFILES["cpu"]
    return dataclasses.replace(profile, sizes={**profile.sizes, "sweep_points": points})


def test_grid_takes_a_centred_contiguous_run_for_each_profile():
    rates = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3]
    assert PROFILES["smoke"].size("sweep_points") == 2 and arms.grid(rates, PROFILES["smoke"]) == [3e-5, 1e-4]
    assert PROFILES["cpu"].size("sweep_points") == 4 and arms.grid(rates, PROFILES["cpu"]) == [1e-5, 3e-5, 1e-4, 3e-4]
    assert PROFILES["gpu"].size("sweep_points") == 4
    assert arms.grid(rates, with_sweep_points(1)) == [1e-4]  # one point: the middle
    assert arms.grid(rates[:2], PROFILES["gpu"]) == rates[:2]  # fewer values than points: all of them


@pytest.mark.parametrize("length", range(1, 10))
@pytest.mark.parametrize("points", range(1, 10))
def test_grid_is_a_contiguous_run_of_the_right_size_so_a_log_grid_stays_even(length, points):
    values = [10.0**-k for k in range(length, 0, -1)]
    thinned = arms.grid(values, with_sweep_points(points))
    assert len(thinned) == min(length, points)
    start = values.index(thinned[0])
    assert thinned == values[start : start + len(thinned)]  # contiguous: every step the same factor
    assert abs((start) - (length - len(thinned) - start)) <= 1  # centred


def test_the_book_sweeps_have_at_least_four_points_and_two_seeds_outside_smoke():
    for name in ("cpu", "gpu"):
        profile = PROFILES[name]
        assert profile.size("sweep_points") >= 4 and profile.sweep_seeds >= 2 and profile.size("sweep_extensions") >= 1
        for values in (arms.BACKBONE_RATES, arms.PROBE_RATES, arms.PROBE_EPOCHS):
            assert len(arms.grid(values, profile)) >= 4
    assert PROFILES["cpu"].seeds >= 5


# ---------------------------------------------------------------- spread_factor and discriminative_rates


def model_with_layers(layers: int, pooler: bool = False) -> MultiTaskModel:
    model = MultiTaskModel(tiny_bert(layers), {"a": SentenceHead(32, 2)})
    if pooler:  # parameters after the blocks: an 'extras' group (MultiTaskModel drops BERT's own pooler)
        model.encoder.pooler = BertPooler(model.encoder.config)
    return model


@pytest.mark.parametrize("layers", [1, 2, 3, 6])
def test_each_depth_gets_the_top_rate_divided_by_its_share_of_the_spread(layers):
    """Depth k of D = layers + 1 backbone depths (0 = embeddings) gets top / spread^((D-1-k)/(D-1)):
    the top layer the top rate, the embeddings the top rate / spread, geometric in between."""
    model = model_with_layers(layers)
    top, head = 1e-3, 1e-2
    rates = discriminative_rates(model, head, spread_factor(model, ULMFIT_SPREAD), backbone_lr=top)
    expected = {
        "embeddings": top / ULMFIT_SPREAD,
        **{f"layer.{i}": top / ULMFIT_SPREAD ** ((layers - 1 - i) / layers) for i in range(layers)},
        "head.a": head,
    }
    assert rates.keys() == expected.keys()
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[f"layer.{layers - 1}"] == top and rates["head.a"] == head


def test_extras_above_the_blocks_get_the_top_layer_rate():
    model = model_with_layers(2, pooler=True)
    rates = discriminative_rates(model, 1e-2, spread_factor(model, 100.0), backbone_lr=1e-3)
    assert rates["extras"] == rates["layer.1"] == 1e-3
    assert rates["layer.0"] == pytest.approx(1e-4, rel=1e-12) and rates["embeddings"] == pytest.approx(1e-5, rel=1e-12)


def test_a_spread_of_one_gives_every_depth_the_same_rate():
    model = model_with_layers(3)
    assert spread_factor(model, 1.0) == 1.0
    rates = discriminative_rates(model, 1e-2, spread_factor(model, 1.0), backbone_lr=1e-3)
    assert {name: rate for name, rate in rates.items() if name != "head.a"} == dict.fromkeys(
        ["embeddings", "layer.0", "layer.1", "layer.2"], 1e-3
    )


@pytest.mark.parametrize("spread", [0.0, -2.0, float("nan"), float("inf")])
def test_spread_factor_refuses_a_spread_that_is_not_a_finite_positive_number(spread):
    with pytest.raises(ValueError, match="spread must be a finite number > 0"):
        spread_factor(model_with_layers(1), spread)
