"""The package's hand-written maths checked against the libraries that compute the same thing.

Entity F1 from per-sentence counts against seqeval; the noise rule's interval (one seed per arm) against
scipy's paired percentile bootstrap; the benchmark's analytic FLOPs against torch's FLOP counter.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics.sequence_labeling import get_entities
from torch.utils.flop_counter import FlopCounterMode

from bench.flops import forward_flops, step_flops
from conftest import data_dir, tiny_bert
from mtl_helpers import MultiTaskModel, RunRecord, SentenceHead, TaskEvaluation, compare, freeze, load_task
from mtl_helpers.evaluation import entity_counts, metric_from_outcomes

ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")


# ---------------------------------------------------------------- entity F1 against seqeval


def perturbed_tags(gold: list[str], rng: np.random.Generator, strength: float) -> list[str]:
    """Imperfect predictions made from gold tags: entities dropped, relabelled, cut short or stretched
    by a token, and spurious one-token entities added, each with a chance that grows with `strength`."""
    pred = list(gold)
    for entity_type, start, end in get_entities(gold):
        roll = rng.random()
        if roll < strength:  # missed entity
            pred[start : end + 1] = ["O"] * (end + 1 - start)
        elif roll < 2 * strength:  # right span, wrong type
            other = rng.choice([t for t in ENTITY_TYPES if t != entity_type])
            pred[start : end + 1] = [f"B-{other}"] + [f"I-{other}"] * (end - start)
        elif roll < 3 * strength and end > start:  # boundary: the last token cut off
            pred[end] = "O"
        elif roll < 3 * strength and end + 1 < len(gold) and gold[end + 1] == "O":  # boundary: one token too many
            pred[end + 1] = f"I-{entity_type}"
    for i, tag in enumerate(gold):
        if tag == "O" and pred[i] == "O" and rng.random() < strength / 10:  # a spurious entity
            pred[i] = f"B-{rng.choice(ENTITY_TYPES)}"
    return pred


@pytest.fixture(scope="module")
def conll_tags() -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """CoNLL-2003 validation tags: gold, lightly perturbed and heavily perturbed (deterministic)."""
    data_dir()
    task = load_task("conll2003")
    names = task.label_names
    gold = [[names[i] for i in row["label"]] for row in task.splits["validation"]]
    rng = np.random.default_rng(2003)
    light = [perturbed_tags(g, rng, 0.05) for g in gold]
    heavy = [perturbed_tags(g, rng, 0.15) for g in gold]
    return gold, light, heavy


def package_outcomes(gold: list[list[str]], pred: list[list[str]]) -> np.ndarray:
    return np.array([entity_counts(g, p) for g, p in zip(gold, pred)]).reshape(-1, 3)


def test_entity_f1_summed_over_sentences_equals_seqeval_on_conll(conll_tags):
    gold, light, heavy = conll_tags
    assert len(gold) > 3000
    for pred in (light, heavy, gold):
        ours = float(metric_from_outcomes("token", package_outcomes(gold, pred)))
        assert ours == pytest.approx(seqeval_f1(gold, pred), abs=1e-12)
    # The perturbations must actually make mistakes, or the comparison above proves little.
    light_f1, heavy_f1 = (float(metric_from_outcomes("token", package_outcomes(gold, p))) for p in (light, heavy))
    assert 0.4 < heavy_f1 < light_f1 < 0.97


def test_entity_f1_under_resampling_weights_equals_seqeval_on_the_resampled_sentences(conll_tags):
    """The bootstrap passes integer weights (how often each sentence was drawn): the weighted F1 must be
    seqeval's F1 over the list in which each sentence appears that many times."""
    gold, _, heavy = conll_tags
    gold, heavy = gold[:400], heavy[:400]
    outcomes = package_outcomes(gold, heavy)
    rng = np.random.default_rng(7)
    weights = rng.multinomial(400, np.full(400, 1 / 400), size=3).astype(float)
    ours = metric_from_outcomes("token", outcomes, weights)
    for row, weighted in zip(weights.astype(int), ours):
        drawn = np.repeat(np.arange(400), row)
        assert weighted == pytest.approx(seqeval_f1([gold[i] for i in drawn], [heavy[i] for i in drawn]), abs=1e-12)


# ---------------------------------------------------------------- the noise rule against scipy's bootstrap


def one_seed_arm(name: str, task: str, level: str, outcomes: np.ndarray) -> list[RunRecord]:
    """A one-run arm built through the public helpers, as a notebook builds a record without a Trainer."""
    metric = (
        {"accuracy": float(outcomes.mean())}
        if level == "sentence"
        else {"entity_f1": float(metric_from_outcomes("token", outcomes))}
    )
    evaluation = TaskEvaluation(task, "validation", level, metric, outcomes, 0.0)
    rows = [{"text": f"example {i}", "label": 0} for i in range(len(outcomes))]  # both arms: the same examples
    task_data = SimpleNamespace(
        name=task, level=level, splits={"validation": rows}, sizes=lambda: {"validation": len(outcomes)}
    )
    return [RunRecord.from_outcomes(name, "cpu", 0, "m", {task: task_data}, {"validation": {task: evaluation}})]


def scipy_interval(samples: tuple[np.ndarray, ...], statistic) -> tuple[float, float]:
    result = scipy.stats.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=True,
        method="percentile",
        n_resamples=20000,
        confidence_level=0.95,
        random_state=np.random.default_rng(11),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def test_one_seed_accuracy_interval_agrees_with_scipy_paired_percentile_bootstrap():
    rng = np.random.default_rng(12)
    a = (rng.random(400) < 0.8).astype(np.int8)
    b = a.copy()
    flip = rng.choice(400, 60, replace=False)  # discordant pairs, more often to b's loss
    b[flip] = (rng.random(60) < 0.35).astype(np.int8)
    ours = compare(one_seed_arm("a", "t", "sentence", a), one_seed_arm("b", "t", "sentence", b), n_boot=20000)
    low, high = scipy_interval((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis))
    assert ours.paired and ours.effect == pytest.approx(a.mean() - b.mean(), abs=1e-15)
    assert low < high and high - low > 0.03  # a real interval, so agreement within 0.01 says something
    assert ours.low == pytest.approx(low, abs=0.005) and ours.high == pytest.approx(high, abs=0.005)


def test_one_seed_entity_f1_interval_agrees_with_scipy_paired_percentile_bootstrap(conll_tags):
    gold, light, heavy = (tags[:400] for tags in conll_tags)
    out_a, out_b = package_outcomes(gold, light), package_outcomes(gold, heavy)

    def f1_difference(tp_a, fp_a, fn_a, tp_b, fp_b, fn_b, axis):
        def f1(tp, fp, fn):
            return 2 * tp.sum(axis) / (2 * tp.sum(axis) + fp.sum(axis) + fn.sum(axis))

        return f1(tp_a, fp_a, fn_a) - f1(tp_b, fp_b, fn_b)

    ours = compare(
        one_seed_arm("light", "ner", "token", out_a), one_seed_arm("heavy", "ner", "token", out_b), n_boot=20000
    )
    low, high = scipy_interval((*out_a.T, *out_b.T), f1_difference)
    assert ours.paired and ours.metric == "entity_f1"
    assert ours.effect == pytest.approx(f1_difference(*out_a.T, *out_b.T, axis=-1), abs=1e-12)
    assert low < high and high - low > 0.03
    assert ours.low == pytest.approx(low, abs=0.005) and ours.high == pytest.approx(high, abs=0.005)


# ---------------------------------------------------------------- analytic FLOPs against torch's counter
#
# The hand count (bench/flops.py) counts matrix products only, 2 FLOPs per multiply-add. torch's
# FlopCounterMode also counts only matrix products (mm, addmm, bmm, attention kernels), not softmax,
# LayerNorm, GELU, dropout or the bias additions, so on those the two agree by construction; what is
# compared here is the matrix-product bookkeeping: the Q, K, V, O and feed-forward matrices, Q K^T and
# attention x V, and which of them get a backward pass. Attention runs "eager" (explicit bmm): the fused
# CPU attention kernel that "sdpa" picks when no gradient is needed is not counted by FlopCounterMode.

BATCH, LENGTH, CLASSES, LAYERS, HIDDEN = 4, 16, 3, 3, 32


def counted_flops(trainable_layers: int, backward: bool = True) -> tuple[float, object]:
    """FlopCounterMode's total for one forward (and backward) of a tiny MultiTaskModel with the top
    `trainable_layers` trainable (the head always trains)."""
    encoder = tiny_bert(LAYERS, HIDDEN)
    encoder.config._attn_implementation = "eager"
    model = MultiTaskModel(encoder, {"a": SentenceHead(HIDDEN, CLASSES)})  # drops BERT's unused pooler
    frozen = ["embeddings", *[f"layer.{i}" for i in range(LAYERS - trainable_layers)]]
    if trainable_layers < LAYERS:
        freeze(model, *frozen)
    generator = torch.Generator().manual_seed(0)
    batch = {
        "input_ids": torch.randint(1000, 2000, (BATCH, LENGTH), generator=generator),
        "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long),
    }
    with FlopCounterMode(display=False) as counter:
        if backward:
            model("a", batch).sum().backward()
        else:
            model.token_states(batch)
    return counter.get_total_flops(), encoder.config


def test_encoder_forward_flops_equal_torch_flop_counter():
    counted, config = counted_flops(LAYERS, backward=False)
    assert counted == forward_flops(config, BATCH, LENGTH)


def test_full_fine_tuning_step_flops_equal_torch_flop_counter():
    """All layers trainable (embeddings too): every matrix product gets both backward products, as the
    hand count's 'backward = 2 x forward' assumes, so the two agree exactly."""
    counted, config = counted_flops(LAYERS)
    assert counted == step_flops(config, BATCH, LENGTH, LAYERS, CLASSES)


@pytest.mark.parametrize("trainable_layers", [1, 2])
def test_top_layers_step_flops_overcount_only_the_unneeded_input_gradients(trainable_layers):
    """With the layers below frozen, autograd skips the gradient of the lowest trainable layer's input
    through its Q, K and V projections (3 x 2 d^2 per token), which the hand count's 'backward = 2 x
    forward' includes: the hand count is high by exactly that, 7% and 4% on this tiny model and about
    1.5% for MiniLM-L6 training its top two layers at 128 tokens."""
    counted, config = counted_flops(trainable_layers)
    unneeded_input_gradient = 3 * 2 * HIDDEN**2 * BATCH * LENGTH
    assert step_flops(config, BATCH, LENGTH, trainable_layers, CLASSES) - counted == unneeded_input_gradient
    assert counted == pytest.approx(step_flops(config, BATCH, LENGTH, trainable_layers, CLASSES), rel=0.08)


def test_heads_only_step_flops_overcount_only_the_head_input_gradient():
    """A frozen backbone: the head gets its weight gradient but not that of its input (2 d C per
    example), which the hand count's 'x3 with backward' includes."""
    counted, config = counted_flops(0)
    assert step_flops(config, BATCH, LENGTH, 0, CLASSES) - counted == 2 * HIDDEN * CLASSES * BATCH
    assert counted == pytest.approx(step_flops(config, BATCH, LENGTH, 0, CLASSES), rel=1e-3)
