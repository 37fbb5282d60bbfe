"""Sentence embeddings of a frozen backbone: computed once per task and split, then reused. Heads
trained on them train exactly as on the backbone's live output (a frozen part runs without dropout),
only without running the transformer at every step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import default_collate
from transformers import PreTrainedTokenizerBase

from .batches import TokenizedTasks, make_collator, to_device
from .errors import MTLError
from .groups import layer_groups
from .layer_cache import LayerCache, tensor_digest
from .model import MultiTaskModel

if TYPE_CHECKING:
    from .config import TrainConfig


def backbone_is_frozen(model: MultiTaskModel) -> list[str]:
    """Names of the backbone groups that are trainable (empty when the whole backbone is frozen)."""
    return [n for n, g in layer_groups(model).items() if not g.is_head and g.trainable]


@torch.no_grad()
def embed_rows(
    model: MultiTaskModel, rows: list[dict], collate, device: torch.device, batch_size: int = 128, autocast=None
) -> torch.Tensor:
    """Sentence embeddings of tokenized rows (eval mode), in row order, on the CPU."""
    if not rows:
        return torch.empty(0, model.hidden_size)
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # similar lengths: little padding
    out = torch.empty(len(rows), model.hidden_size)
    try:
        for start in range(0, len(order), batch_size):
            ids = order[start : start + batch_size]
            batch = collate([{k: v for k, v in rows[i].items() if k != "labels"} for i in ids])
            if autocast is not None:
                with autocast():
                    emb = model.embed(to_device(batch, device))
            else:
                emb = model.embed(to_device(batch, device))
            out[ids] = emb.float().cpu()
    finally:
        model.train(was_training)
    return out


def embed_texts(
    model: MultiTaskModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int = 64,
    max_length: int = 128,
) -> torch.Tensor:
    """Mean-pooled sentence embeddings of raw texts (eval mode, on the model's device), on the CPU."""
    from transformers import DataCollatorWithPadding

    device = next(model.parameters()).device
    enc = tokenizer(list(texts), truncation=True, max_length=max_length) if len(texts) else {}
    rows = [{k: enc[k][i] for k in enc.keys()} for i in range(len(texts))]
    return embed_rows(model, rows, DataCollatorWithPadding(tokenizer), device, batch_size)


_SHARED: dict[tuple, torch.Tensor] = {}  # features of a frozen backbone, reused by every trainer of this process
_SHARED_LIMIT = 64


def backbone_fingerprint(model: MultiTaskModel) -> str:
    """A hash of the backbone's exact weights: the name, dtype, shape and bytes of every parameter and
    buffer (`layer_cache.tensor_digest`). Sums would not do: permuting values keeps every sum."""
    encoder = model.encoder
    named = [("parameter", n, p) for n, p in encoder.named_parameters()]
    return tensor_digest(named + [("buffer", n, b) for n, b in encoder.named_buffers()])


class FeatureCache:
    """Rows of {"features", "labels"} per task and split, embedded once by the frozen backbone and
    shared across trainers in this process whose backbones have the same weights."""

    def __init__(
        self,
        model: MultiTaskModel,
        tokenized: TokenizedTasks,
        device: torch.device,
        batch_size: int = 128,
        autocast=None,
    ):
        self.model, self.tokenized, self.device, self.batch_size, self.autocast = (
            model,
            tokenized,
            device,
            batch_size,
            autocast,
        )
        self.tasks = tokenized.tasks
        for name, task in self.tasks.items():
            if task.level != "sentence":
                raise MTLError(
                    f"cache_features works for sentence tasks only; {name!r} is token-level. Set cache_features=False."
                )
        self.check()
        self._rows: dict[tuple[str, str], list[dict]] = {}
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """The backbone's weight hash, computed once: the backbone stays frozen while the cache lives
        (the Trainer refuses to unfreeze it), and hashing 22.7M parameters at every split would cost."""
        if self._fingerprint is None:
            self._fingerprint = backbone_fingerprint(self.model)
        return self._fingerprint

    def check(self) -> None:
        trainable = backbone_is_frozen(self.model)
        if trainable:
            raise MTLError(
                f"cache_features needs a frozen backbone, but {trainable} are trainable. "
                "Call freeze(model, 'backbone') first, or set cache_features=False."
            )
        if getattr(self.model, "dropout_in_frozen", False):
            raise MTLError(
                "cache_features needs a deterministic backbone, but the model keeps dropout in frozen parts "
                "(dropout_in_frozen=True). Build the model without it, or set cache_features=False."
            )

    def rows(self, task: str, split: str) -> list[dict]:
        key = (task, split)
        if key not in self._rows:
            if split == "train_eval":  # the same sentences as part of train: reuse their features
                train = self.rows(task, "train")
                self._rows[key] = [train[i] for i in self.tokenized.train_eval_ids(task)]
            else:
                tokens = self.tokenized.rows(task, split)
                shared = (self.fingerprint, hash(tuple(tuple(r["input_ids"]) for r in tokens)), self.autocast is None)
                features = _SHARED.get(shared)
                if features is None:
                    collate = make_collator(
                        self.tasks[task], self.tokenized.tokenizer, "longest", self.tokenized.max_length
                    )
                    features = embed_rows(self.model, tokens, collate, self.device, self.batch_size, self.autocast)
                    if len(_SHARED) >= _SHARED_LIMIT:
                        _SHARED.pop(next(iter(_SHARED)))
                    _SHARED[shared] = features
                # the token count stays with each row so that length-grouped batches are the same as without the cache
                self._rows[key] = [
                    {"features": f, "labels": r["labels"], "length": len(r["input_ids"])}
                    for f, r in zip(features, tokens)
                ]
        return self._rows[key]

    def collator(self, task: str):
        return default_collate

    @staticmethod
    def lengths(rows) -> list[int]:
        return [r["length"] for r in rows]


def trainer_data(
    model: MultiTaskModel, tokenized: TokenizedTasks, device: torch.device, config: TrainConfig, autocast=None
) -> TokenizedTasks | FeatureCache | LayerCache:
    """Where a Trainer draws its rows from: the tokenized rows, or (config `cache_features`) the cached
    sentence embeddings of a frozen backbone, or (config `cache_frozen_layers`) the tokenized rows with
    the cached output of the frozen lower layers."""
    if config.cache_features:
        return FeatureCache(model, tokenized, device, config.eval_batch_size, autocast)
    if config.cache_frozen_layers:
        return LayerCache(model, tokenized, device, config.eval_batch_size, autocast)
    return tokenized
