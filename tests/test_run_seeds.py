"""run_seeds: an interrupt stops the loop and saves nothing, a cut-short record is never reused, the
results folder is checked before any training, and a sweep never chooses a point without scores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_model

from mtl_helpers import MTLError, RunRecord, Trainer, TrainConfig, chosen_value, load_records, run_seeds, sweep_table
from mtl_helpers.callbacks import Callback
from mtl_helpers.state import StepRecord


class InterruptAt(Callback):
    """Ctrl-C at a given step of the fit."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step: StepRecord) -> None:
        if step.step == self.step:
            raise KeyboardInterrupt


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("MTL_REPLACE_RECORDS", raising=False)
    return tmp_path / "results"


def trainer_for(tokenizer, tasks, seed, callbacks=()):
    config = TrainConfig(epochs=1, batch_size=16, seed=seed, eval_every=None, progress=False)
    return Trainer(tiny_model(tasks, seed=seed), tokenizer, tasks, config, callbacks=list(callbacks))


SPEC = {"what": "tiny heads"}


@pytest.mark.filterwarnings("ignore:Training interrupted")
def test_an_interrupt_stops_the_loop_and_saves_nothing(scratch, tokenizer, trec):
    called = []

    def train(seed):
        called.append(seed)
        trainer = trainer_for(tokenizer, [trec], seed, [InterruptAt(2)])
        trainer.fit()  # catches the KeyboardInterrupt (a notebook user keeps the history) after 2 of 6 steps
        assert trainer.global_step == 2
        return trainer

    with pytest.raises(KeyboardInterrupt, match="seed 0.*nothing was saved"):
        run_seeds("cut-short", train, [0, 1], "cpu", SPEC, splits=("validation",), log=None)
    assert called == [0]
    assert load_records("cpu", root=scratch) == []


def test_an_interrupted_stored_record_is_not_reused(scratch, tokenizer, trec):
    called = []

    def train(seed):
        called.append(seed)
        trainer = trainer_for(tokenizer, [trec], seed)
        trainer.fit(0.2)
        return trainer

    [first] = run_seeds("cut-short", train, [0], "cpu", SPEC, splits=("validation",), log=None)
    path = next(scratch.rglob("*--seed0.json"))
    data = json.loads(path.read_text())
    data["interrupted"] = True  # as an older version saved a run cut short by Ctrl-C
    path.write_text(json.dumps(data))
    messages = []
    [again] = run_seeds("cut-short", train, [0], "cpu", SPEC, splits=("validation",), log=messages.append)
    assert called == [0, 0] and not again.interrupted and "reused" not in messages[0]


def test_an_unwritable_results_folder_is_named_before_training(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MTL_RESULTS_DIR", str(tmp_path / "a-file" / "results"))
    called = []
    with pytest.raises(MTLError, match=r"a-file/results/cpu.*cannot be written.*MTL_RESULTS_DIR"):
        run_seeds("never", lambda seed: called.append(seed), [0], "cpu", SPEC, log=None)
    assert called == []


def scored(value, seeds=(0, 1), split="validation"):
    return [
        RunRecord(
            scenario="sweep",
            profile="cpu",
            seed=s,
            model="m",
            tasks={t: {"level": "sentence", "metric": "accuracy", "sizes": {}} for t in ("a", "b")},
            metrics={split: {"a": {"accuracy": value}, "b": {"accuracy": value}}},
        )
        for s in seeds
    ]


def test_a_sweep_never_chooses_a_point_without_validation_scores():
    arms = {1e-3: scored(0.6), 1e-2: scored(float("nan")), 1e-1: scored(0.7)}
    with pytest.raises(MTLError, match=r"0\.01.*lack validation scores"):
        sweep_table(arms)
    arms = {(1e-3, 2): scored(0.6), (1e-2, 2): scored(0.5, split="test")}
    with pytest.raises(MTLError, match=r"\(0\.01, 2\).*lack validation scores"):
        sweep_table(arms)
    table = sweep_table({1e-3: scored(0.6), 1e-1: scored(0.7)})
    assert chosen_value(table) == 0.1 and table["chosen"].tolist() == [False, True]
    table.loc[0.1, "mean"] = np.nan
    with pytest.raises(MTLError, match="no chosen point with a score"):
        chosen_value(table)
