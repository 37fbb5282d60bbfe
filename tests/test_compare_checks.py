"""The noise rule refuses what it cannot compare: runs scored on other examples, records that do not
say which examples they were scored on, arms that mix tasks or levels, empty inputs; and its numbers do
not depend on the order in which the runs of an arm are listed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import tiny_model

from mtl_helpers import MTLError, RunRecord, Trainer, TrainConfig, compare, summarize
from mtl_helpers.records import encode_outcomes, examples_digest


def arm(name, correct_by_seed, task="t", split="validation", level="sentence", seeds=None, digest="d0"):
    records = []
    for seed, correct in zip(seeds or range(len(correct_by_seed)), correct_by_seed):
        correct = np.asarray(correct)
        records.append(
            RunRecord(
                scenario=name,
                profile="cpu",
                seed=seed,
                model="m",
                tasks={
                    task: {"level": level, "sizes": {}, "metric": "accuracy" if level == "sentence" else "entity_f1"}
                },
                metrics={split: {task: {"accuracy": float(correct.mean())}}},
                outcomes={split: {task: encode_outcomes(correct)}},
                examples={split: {task: digest}},
            )
        )
    return records


def runs(p, n, seeds, rng):
    return [(rng.random(n) < p + 0.05 * rng.standard_normal()).astype(int) for _ in range(seeds)]


# -- 3: the examples a run was scored on


def test_runs_scored_on_other_examples_are_refused(trec):
    """A data copy missing one training line shifts the held-out rows: as many examples, not the same ones."""
    shifted = copy.copy(trec)
    rows = trec.splits["validation"]
    shifted.splits = {**trec.splits, "validation": rows[1:] + [trec.splits["test"][0]]}

    def untrained_record(task, tokenizer):
        torch.manual_seed(0)
        trainer = Trainer(tiny_model([task]), tokenizer, [task], TrainConfig(progress=False, eval_every=None))
        return trainer.result("untrained", "cpu", ("validation", "train_eval"))

    from transformers import AutoTokenizer

    from mtl_helpers import default_model_path

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    original, moved = untrained_record(trec, tokenizer), untrained_record(shifted, tokenizer)
    assert original.examples["validation"]["trec"] == examples_digest(rows)
    train = trec.splits["train"]
    train_eval_ids = sorted(np.random.default_rng(0).permutation(len(train))[: len(rows)])  # TokenizedTasks' slice
    assert original.examples["train_eval"]["trec"] == examples_digest([train[i] for i in train_eval_ids])
    assert len(original.outcome_array("trec")) == len(moved.outcome_array("trec"))
    assert compare([original], [original], tasks=["trec"]).effect == 0
    with pytest.raises(MTLError, match=r"different trec validation examples.*untrained"):
        compare([original], [moved], tasks=["trec"])
    with pytest.raises(MTLError, match=r"different trec validation examples"):
        compare([original, moved], [original, original], tasks=["trec"])


def test_records_that_do_not_name_their_examples_are_refused():
    rng = np.random.default_rng(0)
    a, b = arm("a", runs(0.8, 50, 2, rng)), arm("b", runs(0.7, 50, 2, rng))
    b[1].examples = {}
    with pytest.raises(MTLError, match=r"'b' \(seed 1\) does not say which t validation examples.*re-run"):
        compare(a, b)


# -- 4: the order of the runs in an arm does not matter


def test_reversing_the_runs_of_each_arm_gives_the_same_numbers():
    rng = np.random.default_rng(11)
    a, b = arm("a", runs(0.8, 120, 4, rng)), arm("b", runs(0.75, 120, 4, rng))
    assert compare(a[::-1], b[::-1]) == compare(a, b)
    assert compare(a[::-1], b) == compare(a, b)
    unpaired = arm("c", runs(0.75, 120, 3, rng), seeds=[7, 8, 9])
    assert compare(a[::-1], unpaired[::-1]) == compare(a, unpaired)


# -- 7b: clear errors


def test_compare_refuses_bad_inputs_by_name():
    rng = np.random.default_rng(1)
    a, b = arm("a", runs(0.8, 40, 2, rng)), arm("b", runs(0.8, 40, 2, rng))
    with pytest.raises(MTLError, match="n_boot=0.*integer >= 1"):
        compare(a, b, n_boot=0)
    with pytest.raises(MTLError, match="no t validation examples"):
        compare(arm("a", [[], []]), arm("b", [[], []]))
    with pytest.raises(MTLError, match="single t validation example.*at least 2 examples"):
        compare(arm("a", [[1], [0]]), arm("b", [[1], [1]]))  # several seeds: the t interval needs 2 examples
    token = arm("b", [np.ones((40, 3), int)] * 2, level="token")
    with pytest.raises(MTLError, match="sentence.*token"):
        compare(a, token)
    other_task = arm("b", runs(0.8, 40, 2, rng), task="u")
    with pytest.raises(MTLError, match=r"tasks \['u'\] there") as err:
        compare(a, other_task)
    assert "'validation'" not in str(err.value).split("there")[0].split("tasks")[-1]


def test_summarize_refuses_mixed_and_empty_arms():
    rng = np.random.default_rng(2)
    mixed = arm("a", runs(0.8, 20, 1, rng)) + arm("a", runs(0.8, 20, 1, rng), task="u", seeds=[1])
    with pytest.raises(MTLError, match="arm 'mixed'.*different tasks"):
        summarize({"mixed": mixed})
    with pytest.raises(MTLError, match="arm 'empty' has no runs"):
        summarize({"empty": []})
