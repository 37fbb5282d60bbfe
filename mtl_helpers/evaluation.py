"""Scoring a model on a task: metrics, and the per-example outcomes that the noise rule resamples.

Sentence tasks keep one 0/1 per example (correct or not); token tasks keep, per sentence, the counts
of true-positive, false-positive and false-negative entities, from which entity F1 (the CoNLL score,
as seqeval computes it) follows for any resample of the sentences. Token tasks are scored over every
word of every sentence: a word without a prediction (cut off by max_length, or without any sub-token)
counts as predicted "O", so its gold entity is a miss, and the metrics say how many there were.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from seqeval.metrics.sequence_labeling import get_entities
from sklearn.metrics import f1_score

from .batches import TokenizedTasks, WordAlignment, make_loader, to_device
from .tasks import TaskData
from .errors import MTLError
from .layer_cache import LayerCache
from .model import check_model_fits

PRIMARY_METRIC = {"sentence": "accuracy", "token": "entity_f1"}


@dataclass
class TaskEvaluation:
    """One task on one split: metrics, per-example outcomes, and how long scoring took."""

    task: str
    split: str
    level: str
    metrics: dict[str, float]
    outcomes: np.ndarray  # (n,) of 0/1 for sentence tasks; (n, 3) of tp, fp, fn for token tasks
    seconds: float

    @property
    def examples(self) -> int:
        return len(self.outcomes)


def metric_from_outcomes(level: str, outcomes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | float:
    """The primary metric (accuracy or entity F1) from outcomes, optionally under example weights of
    shape (..., n): a bootstrap passes many rows of resampling weights at once."""
    outcomes = np.asarray(outcomes, dtype=float)
    if weights is None:
        weights = np.ones(len(outcomes))
    if level == "sentence":
        return (weights @ outcomes) / weights.sum(axis=-1)
    tp, fp, fn = (weights @ outcomes[:, i] for i in range(3))
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)


def entity_counts(gold: list[str], pred: list[str]) -> tuple[int, int, int]:
    """True-positive, false-positive and false-negative entities of one tagged sentence."""
    gold_set, pred_set = set(get_entities(gold)), set(get_entities(pred))
    return len(gold_set & pred_set), len(pred_set - gold_set), len(gold_set - pred_set)


def _token_metrics(
    task: TaskData, preds: list[list[int]], golds: list[list[int]], words: Sequence[WordAlignment]
) -> tuple[np.ndarray, dict[str, float]]:
    """Per-sentence entity counts and metrics over every word: a word without a prediction is "O"."""
    names = task.label_names
    if "O" not in names:
        raise MTLError(f"Token task {task.name!r} has no 'O' tag among {names}; words without a prediction need one.")
    if len(words) != len(preds):
        raise MTLError(
            f"{task.name}: {len(preds)} sentences were scored but {len(words)} word alignments given. "
            "Pass TokenizedTasks.alignments(task, split) in the loader's row order."
        )
    outside = names.index("O")
    outcomes, correct, total, words_cut, without_tokens, entities_cut = [], 0, 0, 0, 0, 0
    for k, (pred, gold, sentence) in enumerate(zip(preds, golds, words)):
        if len(sentence.scored) != len(pred) or [sentence.labels[w] for w in sentence.scored] != gold:
            raise MTLError(
                f"{task.name} sentence {k}: the word alignment does not fit the loader's labels; the "
                "alignments must be in the loader's row order (Trainer.evaluate_outcomes does this)."
            )
        full = [outside] * len(sentence.labels)
        for word, tag in zip(sentence.scored, pred):
            full[word] = tag
        gold_tags, pred_tags = [names[i] for i in sentence.labels], [names[i] for i in full]
        outcomes.append(entity_counts(gold_tags, pred_tags))
        correct += sum(a == b for a, b in zip(sentence.labels, full))
        total += len(full)
        words_cut += len(full) - sentence.cut_at
        without_tokens += sentence.cut_at - len(sentence.scored)
        entities_cut += sum(end >= sentence.cut_at for _, _, end in get_entities(gold_tags))
    outcomes = np.array(outcomes, dtype=np.int32).reshape(-1, 3)
    return outcomes, {
        "entity_f1": float(metric_from_outcomes("token", outcomes)),
        "token_accuracy": correct / max(total, 1),
        "words_cut": words_cut,
        "entities_cut": entities_cut,
        "words_without_tokens": without_tokens,
    }


@torch.no_grad()
def evaluate_task(
    model,
    task: TaskData,
    split: str,
    loader,
    device: torch.device,
    autocast=None,
    words: Sequence[WordAlignment] | None = None,
) -> TaskEvaluation:
    """Metrics and outcomes of `model` on one task's loader (eval mode; the mode is restored after).

    Token tasks need `words`: each sentence's WordAlignment in the loader's row order
    (TokenizedTasks.alignments), so that words the model never saw are scored too.
    """
    if task.level == "token" and words is None:
        raise MTLError(
            f"evaluate_task on token task {task.name!r} needs words=: the WordAlignment of each sentence, "
            "in the loader's row order (TokenizedTasks.alignments(task, split)), so that words cut off by "
            "max_length are scored too."
        )
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    preds, golds, loss_sum, count = [], [], 0.0, 0
    try:
        for batch in loader:
            batch = to_device(batch, device)
            with autocast() if autocast is not None else contextlib.nullcontext():
                logits = model(task.name, batch).float()
            labels = batch["labels"]
            loss_sum += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            count += int((labels != -100).sum())
            predicted, labels = logits.argmax(-1).cpu(), labels.cpu()
            if task.level == "sentence":
                preds += predicted.tolist()
                golds += labels.tolist()
            else:
                for p, g in zip(predicted, labels):
                    keep = g != -100
                    preds.append(p[keep].tolist())
                    golds.append(g[keep].tolist())
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    loss = loss_sum / max(count, 1)
    if task.level == "sentence":
        outcomes = (np.array(preds) == np.array(golds)).astype(np.int8)
        macro_f1 = f1_score(golds, preds, average="macro", labels=range(len(task.label_names)), zero_division=0)
        metrics = {
            "accuracy": float(outcomes.mean()) if len(outcomes) else float("nan"),
            "macro_f1": float(macro_f1),
            "loss": loss,
        }
    else:
        outcomes, scores = _token_metrics(task, preds, golds, words)
        metrics = {
            "entity_f1": scores.pop("entity_f1"),
            "token_accuracy": scores.pop("token_accuracy"),
            "loss": loss,
            **scores,
        }
    return TaskEvaluation(task.name, split, task.level, metrics, outcomes, seconds)


def precision_autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager] | None:
    """What runs the forward in `precision` ("fp32": nothing; "bf16": torch.autocast on the device's type)."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise MTLError(f"precision={precision!r} is not supported; use 'fp32' or 'bf16'.")
    return None


def length_order(rows: Sequence[dict]) -> list[int]:
    """Row indices shortest first (little padding per batch); the given order for rows without tokens
    (cached features)."""
    if rows and "input_ids" in rows[0]:
        return sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    return list(range(len(rows)))


def score_rows(
    model,
    task: TaskData,
    split: str,
    rows: Sequence[dict],
    collate,
    device: torch.device,
    batch_size: int,
    autocast=None,
    words: Sequence[WordAlignment] | None = None,
    pin_memory: bool = False,
) -> TaskEvaluation:
    """`evaluate_task` on prepared rows (tokenized, or cached features): scored in length order, the
    outcomes returned in the rows' own order, so that runs stay comparable example by example.
    Token tasks need `words`, one WordAlignment per row in the rows' order."""
    order = length_order(rows)
    loader = make_loader([rows[i] for i in order], collate, batch_size, False, pin_memory=pin_memory)
    ordered_words = [words[i] for i in order] if words is not None else None
    result = evaluate_task(model, task, split, loader, device, autocast, ordered_words)
    restored = np.empty_like(result.outcomes)
    restored[order] = result.outcomes
    result.outcomes = restored
    return result


def score_task(
    model,
    tokenizer,
    task: TaskData,
    split: str = "validation",
    *,
    batch_size: int = 128,
    max_length: int = 128,
    padding: str = "longest",
    precision: str = "fp32",
    device: torch.device | None = None,
    cache_frozen_layers: bool = False,
) -> TaskEvaluation:
    """Metrics and per-example outcomes of `model` on one split of `task`, without a Trainer: the rows are
    tokenized as a Trainer with these settings would, scored shortest first on `device` (default: where
    the model's parameters are), and the outcomes kept in the split's row order; token tasks are scored
    over every word. `trainer.evaluate_outcomes` gives the same result for the same settings. With
    `cache_frozen_layers`, the frozen lower layers' output comes from (and goes to) the process's layer
    cache, as in a Trainer with that setting: scoring the same rows again after other seeds is cheaper."""
    check_model_fits(model, tokenizer, [task])
    device = device if device is not None else next(model.parameters()).device
    tokenized = TokenizedTasks({task.name: task}, tokenizer, max_length, padding)
    autocast = precision_autocast(precision, device)
    data = LayerCache(model, tokenized, device, batch_size, autocast) if cache_frozen_layers else tokenized
    words = tokenized.alignments(task.name, split) if task.level == "token" else None
    return score_rows(
        model,
        task,
        split,
        data.rows(task.name, split),
        data.collator(task.name),
        device,
        batch_size,
        autocast,
        words,
        pin_memory=device.type == "cuda",
    )


def weights_key(model: torch.nn.Module) -> tuple:
    """What a score cache is keyed on: each parameter's and buffer's object, storage and version
    counter. Torch bumps a tensor's `_version` on every in-place change (optimizer steps, the `copy_`
    of load_state_dict, another trainer's steps), so a score is reused only while no weight can have
    changed; the train/eval mode is no part of it, as scoring always runs in eval mode. The Trainer's
    `step` bumps the counters itself, as fused AdamW does not; writes through `tensor.data`, or a fused
    optimizer run outside a Trainer, bypass them: then build a new Trainer to score the new weights."""
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple((id(t), t.data_ptr(), t._version) for t in tensors)
