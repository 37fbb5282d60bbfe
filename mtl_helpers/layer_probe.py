"""Accuracy by layer: a linear probe on the mean-pooled output of every layer of a frozen encoder.

The encoder runs once over each task's train, validation and test rows (eval mode, no gradients,
shortest texts first so that a batch holds little padding), returning all its hidden states: the
embedding layer's output (layer 0) and each transformer layer's (1..N). Each is mean-pooled over the
real tokens (`encoder.mean_pool`, as the book's model pools), so layer N's features are exactly the
sentence embeddings of `MultiTaskModel.embed` and `features.embed_texts`: the book's probe.

Per layer, a logistic regression on standardised features (the scaler fitted on train) is trained on
train at each C of a log grid, C chosen on validation by `logreg.sweep_c` (extended by 10 past an edge
holding the best score), and the chosen fit scored on test with a 95% Wilson score interval over the
test rows (binomial: each row right or wrong). No refit on train + validation.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as scipy_stats
from sklearn.preprocessing import StandardScaler
from tqdm.std import tqdm
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase

from .batches import to_device
from .encoder import mean_pool
from .errors import MTLError
from .logreg import C_GRID, C_LIMITS, MAX_ITER, logistic_scorer, sweep_c
from .model import ENCODER_INPUTS, MultiTaskModel
from .evaluation import TaskEvaluation
from .records import RunRecord
from .stats import LEVEL, Comparison, compare
from .tasks import TaskData

INTERVAL = "95% Wilson score interval over the test rows"
COLUMNS = [
    "task",
    "layer",
    "C",
    "edge",
    "validation accuracy",
    "test accuracy",
    "test low",
    "test high",
    "n_test",
    "converged",
]


def wilson_interval(correct: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of a proportion `correct` / `n` (stays inside [0, 1], sound near 0 and 1)."""
    if n <= 0:
        raise MTLError("wilson_interval needs at least one row.")
    z = float(scipy_stats.norm.ppf(1 - (1 - level) / 2))
    p = correct / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def encoder_of(model_or_encoder) -> PreTrainedModel:
    """The Hugging Face encoder: a MultiTaskModel's backbone, or the encoder itself."""
    return model_or_encoder.encoder if isinstance(model_or_encoder, MultiTaskModel) else model_or_encoder


@torch.no_grad()
def layer_features(
    model_or_encoder,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int = 64,
    max_length: int = 128,
    device: torch.device | None = None,
    progress: bool = False,
    desc: str = "",
) -> torch.Tensor:
    """(rows, N + 1, hidden) on the CPU: each text's mean-pooled hidden states, the embedding layer's
    output first, then every transformer layer's, in the texts' order. Tokenized as `embed_texts` does
    (truncation at `max_length`); the encoder runs in eval mode (its mode restored after) on `device`
    (default: where its parameters are)."""
    encoder = encoder_of(model_or_encoder)
    device = device if device is not None else next(encoder.parameters()).device
    layers = encoder.config.num_hidden_layers + 1
    if not texts:
        return torch.empty(0, layers, encoder.config.hidden_size)
    accepted = inspect.signature(encoder.forward).parameters
    names = [k for k in ENCODER_INPUTS if k in accepted]
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    rows = [{k: encoded[k][i] for k in encoded.keys() if k in names} for i in range(len(texts))]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # similar lengths: little padding
    collate = DataCollatorWithPadding(tokenizer)
    out = torch.empty(len(rows), layers, encoder.config.hidden_size)
    was_training = encoder.training
    encoder.eval()
    starts = range(0, len(order), batch_size)
    try:
        for start in tqdm(starts, desc=desc, disable=not progress, leave=False, ncols=90, file=sys.stderr):
            ids = order[start : start + batch_size]
            batch = to_device(collate([rows[i] for i in ids]), device)
            states = encoder(**batch, output_hidden_states=True).hidden_states
            if len(states) != layers:
                raise MTLError(
                    f"The encoder returned {len(states)} hidden states, not its {layers - 1} layers + the "
                    "embeddings; layer_features needs an encoder whose hidden_states hold every layer."
                )
            pooled = torch.stack([mean_pool(s, batch["attention_mask"]) for s in states], dim=1)
            out[ids] = pooled.float().cpu()
    finally:
        encoder.train(was_training)
    return out


def _labels(task: TaskData, split: str) -> np.ndarray:
    return np.array([r["label"] for r in task.splits[split]], dtype=int)


def probe_layers(
    features: dict[str, torch.Tensor],
    labels: dict[str, np.ndarray],
    task: str = "",
    grid: Sequence[float] = C_GRID,
    limits: tuple[float, float] = C_LIMITS,
    max_iter: int = MAX_ITER,
    seed: int = 0,
) -> pd.DataFrame:
    """The probe of every layer from precomputed features ({split: (rows, layers, hidden)}) and labels
    ({split: (rows,)}), for splits train, validation and test: one row per layer (COLUMNS)."""
    rows = []
    for layer in range(features["train"].shape[1]):
        scaler = StandardScaler().fit(features["train"][:, layer].numpy())
        x = {s: scaler.transform(f[:, layer].numpy()) for s, f in features.items()}
        scorer = logistic_scorer(x["train"], labels["train"], x["validation"], labels["validation"], max_iter, seed)
        sweep = sweep_c(scorer, grid, limits)
        hits = (sweep.model.predict(x["test"]) == labels["test"]).astype(np.int8)
        correct = int(hits.sum())
        n = len(labels["test"])
        low, high = wilson_interval(correct, n)
        rows.append(
            {
                "task": task,
                "layer": layer,
                "C": sweep.chosen,
                "edge": sweep.edge,
                "validation accuracy": sweep.best_score,
                "test accuracy": correct / n,
                "test low": low,
                "test high": high,
                "n_test": n,
                "converged": bool(sweep.table.loc[sweep.chosen, "converged"]),
                "test outcomes": hits,  # right (1) or wrong (0) per test row: layers are compared paired
            }
        )
    return pd.DataFrame(rows, columns=[*COLUMNS, "test outcomes"])


def layer_probe(
    model_or_encoder,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[TaskData],
    grid: Sequence[float] = C_GRID,
    *,
    limits: tuple[float, float] = C_LIMITS,
    batch_size: int = 64,
    max_length: int = 128,
    device: torch.device | None = None,
    progress: bool = True,
    max_iter: int = MAX_ITER,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy by layer (module docstring): per sentence task and per layer 0..N (0: the embeddings'
    output), the chosen C, its edge status, validation accuracy, test accuracy with its 95% Wilson
    interval ("test low", "test high") and the number of test rows. The encoder is not changed."""
    tasks = list(tasks)
    if not tasks:
        raise MTLError("layer_probe needs at least one task.")
    for task in tasks:
        if task.level != "sentence":
            raise MTLError(
                f"layer_probe classifies mean-pooled sentences; {task.name!r} is a {task.level}-level task. "
                "Give it sentence tasks only."
            )
        empty = [s for s in ("train", "validation", "test") if not task.splits.get(s)]
        if empty:
            raise MTLError(f"{task.name}: the split(s) {empty} are empty; the probe trains, chooses and tests on them.")
    frames = []
    for task in tasks:
        features = {
            split: layer_features(
                model_or_encoder,
                tokenizer,
                [r["text"] for r in task.splits[split]],
                batch_size,
                max_length,
                device,
                progress,
                f"{task.name} {split}",
            )
            for split in ("train", "validation", "test")
        }
        labels = {split: _labels(task, split) for split in features}
        frames.append(probe_layers(features, labels, task.name, grid, limits, max_iter, seed))
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs["interval"] = INTERVAL
    return frame


__all__ = ["COLUMNS", "INTERVAL", "layer_features", "layer_probe", "probe_layers", "wilson_interval"]


def compare_layers(frame: pd.DataFrame, task: TaskData, a: int, b: int) -> Comparison:
    """Layer `a`'s probe minus layer `b`'s on `task`'s test rows by the book's noise rule (one run per
    arm: the paired bootstrap over the test rows, as for every deterministic method of the book)."""
    records = []
    for layer in (a, b):
        match = frame[(frame["task"] == task.name) & (frame["layer"] == layer)]
        if len(match) != 1:
            raise MTLError(f"compare_layers: the frame has no single row for task {task.name!r}, layer {layer}.")
        hits = match["test outcomes"].iloc[0]
        result = TaskEvaluation(task.name, "test", "sentence", {"accuracy": float(hits.mean())}, hits, 0.0)
        records.append(
            RunRecord.from_outcomes(
                f"layer-{layer}", "probe", 0, "probe", {task.name: task}, {"test": {task.name: result}}
            )
        )
    return compare(records[:1], records[1:], split="test", names=(f"layer {a}", f"layer {b}"))
