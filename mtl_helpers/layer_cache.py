"""Exact caching of frozen lower layers: a run that trains only the top k of N transformer layers
computes what the frozen part below them outputs (the embeddings and layers 0..N-k-1) once per task,
split, token ids and frozen weights, and then runs only the layers above it at every step and every
evaluation.

Exact because a frozen part runs without dropout (`MultiTaskModel.dropout_in_frozen=False`): its
output depends on nothing but its weights and the tokens. The cached level is the number of frozen
groups from the bottom (the embeddings, then the contiguous frozen layers); it is read again at every
batch, so gradual unfreezing (or freezing more) mid-run moves the cache to the new level. States are
keyed on the level and an exact hash of the prefix's tensors, so a changed frozen weight is never
served stale states.

States are stored on the CPU, one [tokens, hidden] tensor per row, in the dtype the frozen part
outputs: float32, also under bf16 autocast, where LayerNorm runs in float32, so the layer above
receives float32 states in the uncached run too; rounding them to bf16 would change the run.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from .adapter_layout import unwrapped
from .batches import TokenizedTasks, make_collator, to_device
from .errors import MTLError
from .groups import transformer_blocks

if TYPE_CHECKING:
    from .model import MultiTaskModel

MIN_LEVEL = 2  # the embeddings alone are a table lookup: caching them would save less than moving them costs
ROW_KEY = "cache_row"  # in a row of LayerCache.rows: (split, index), where the collator finds its states
SHARED_BYTES = 4 * 2**30  # the process-wide store keeps at most this many bytes of states (least recent go first)

_SHARED: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()  # states by key, shared by every trainer
_VERIFIED: set[tuple] = set()  # (encoder class, attention, device type) whose re-run was checked against its forward


def tensor_digest(named: Iterable[tuple[str, str, torch.Tensor]]) -> str:
    """A hash of exact weights: the kind, name, dtype, shape and bytes of every (kind, name, tensor).
    Sums would not do: permuting values (swapping two token embeddings) keeps every sum."""
    digest = hashlib.blake2b(digest_size=32)
    with torch.no_grad():
        for kind, name, tensor in named:
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{kind} {name} {flat.dtype} {tuple(tensor.shape)}\n".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _unsupported(encoder: nn.Module, why: str) -> MTLError:
    return MTLError(
        f"cache_frozen_layers cannot cache the lower layers of {type(encoder).__name__}: {why}. It supports "
        "encoders that run `embeddings` and then the blocks of `encoder.layer` with only an attention mask "
        "between them (BERT, RoBERTa, ELECTRA without an embedding projection). Set cache_frozen_layers=False."
    )


def encoder_stack(encoder: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The encoder's embeddings module and its list of blocks (inside a peft wrapper: the wrapped model's,
    whose blocks hold the adapters), or MTLError naming the model class."""
    encoder = unwrapped(encoder)
    embeddings = getattr(encoder, "embeddings", None)
    blocks = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(embeddings, nn.Module) or not isinstance(blocks, nn.ModuleList):
        raise _unsupported(encoder, "it has no `embeddings` module and `encoder.layer` list of blocks")
    return embeddings, blocks


def check_supported(model: MultiTaskModel) -> None:
    """Refuse what the cache cannot reproduce exactly: dropout in frozen parts, an encoder that is not an
    embeddings module plus a plain stack of blocks, parameters outside both (a projection, a final norm,
    a relative position table the layers share), a decoder."""
    if getattr(model, "dropout_in_frozen", False):
        raise MTLError(
            "cache_frozen_layers needs frozen layers that compute the same output every time, but the model "
            "keeps dropout in frozen parts (dropout_in_frozen=True). Build the model without it, or set "
            "cache_frozen_layers=False."
        )
    encoder = model.encoder
    embeddings, blocks = encoder_stack(encoder)
    if transformer_blocks(unwrapped(encoder))[1] is not blocks:
        raise _unsupported(encoder, "its transformer blocks are not the list `encoder.layer`")
    inside = {id(p) for m in (embeddings, blocks) for p in m.parameters()}
    outside = [n for n, p in encoder.named_parameters() if id(p) not in inside]
    if outside:
        raise _unsupported(
            encoder, f"its forward also uses parameters outside the embeddings and blocks ({outside[0]})"
        )
    if getattr(encoder.config, "is_decoder", False):
        raise _unsupported(encoder, "it is configured as a decoder (causal attention)")


def frozen_level(model: MultiTaskModel) -> int:
    """How many modules from the bottom are wholly frozen (the embeddings, then layer.0, layer.1, ...),
    counting every parameter inside them, so a block holding a trainable adapter (LoRA) ends the prefix;
    0 when fewer than MIN_LEVEL are, where the run goes uncached."""
    embeddings, blocks = encoder_stack(model.encoder)
    level = 0
    for module in (embeddings, *blocks):
        if any(p.requires_grad for p in module.parameters()):
            break
        level += 1
    return level if level >= MIN_LEVEL else 0


def prefix_tensors(encoder: nn.Module, level: int) -> list[tuple[str, str, torch.Tensor]]:
    """(kind, name, tensor) of every parameter and buffer of the frozen prefix of `level` groups."""
    embeddings, blocks = encoder_stack(encoder)
    modules = [("embeddings", embeddings), *((f"layer.{i}", blocks[i]) for i in range(level - 1))]
    out = []
    for prefix, module in modules:
        out += [("parameter", f"{prefix}.{n}", p) for n, p in module.named_parameters()]
        out += [("buffer", f"{prefix}.{n}", b) for n, b in module.named_buffers()]
    return out


def run_blocks(
    encoder: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor, blocks: Sequence[nn.Module]
) -> torch.Tensor:
    """`blocks` applied to `hidden` as the encoder's forward applies them: with the attention mask built
    by `create_bidirectional_mask` from the encoder's config (sdpa: a boolean mask, or none without
    padding; eager: an additive one), in the dtype of the states entering the first block."""
    if not blocks:
        return hidden
    mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=attention_mask)
    for block in blocks:
        out = block(hidden, mask)
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def run_prefix(encoder: nn.Module, batch: Mapping[str, torch.Tensor], level: int) -> torch.Tensor:
    """The output of the bottom `level` groups (the embeddings, then layers 0..level-2) on a token batch."""
    embeddings, blocks = encoder_stack(encoder)
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids") if k in batch}
    hidden = embeddings(**inputs)
    return run_blocks(encoder, hidden, batch["attention_mask"], list(blocks)[: level - 1])


def upper_states(encoder: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The top layer's token states from a batch that carries cached states (`hidden_states`, the output
    of the bottom `cache_level` groups): only the blocks above them run. Refuses a batch whose prefix
    holds a trainable parameter (collated before an unfreeze): its gradient would be silently lost."""
    level = batch["cache_level"]
    embeddings, blocks = encoder_stack(encoder)
    prefix = [embeddings, *list(blocks)[: level - 1]]
    if any(p.requires_grad for m in prefix for p in m.parameters()):
        raise MTLError(
            f"This batch carries the cached output of the bottom {level} groups, but some of them are "
            "trainable now (unfrozen after the batch was collated); collate it again (the cache follows "
            "what is frozen at collation)."
        )
    return run_blocks(encoder, batch["hidden_states"], batch["attention_mask"], list(blocks)[level - 1 :])


def _tokens_key(rows: Sequence[dict]) -> str:
    """An exact hash of every row's token ids and token types (both reach the embeddings)."""
    digest = hashlib.blake2b(digest_size=16)
    for key in ("input_ids", "token_type_ids"):
        if rows and key in rows[0]:
            digest.update(np.array([len(r[key]) for r in rows], dtype=np.int64).tobytes())
            digest.update(np.concatenate([np.asarray(r[key], dtype=np.int64) for r in rows]).tobytes())
    return digest.hexdigest()


def _store(key: tuple, states: list[torch.Tensor]) -> None:
    size = lambda entry: sum(s.numel() * s.element_size() for s in entry)  # noqa: E731 - views: the row sizes
    total = sum(size(entry) for entry in _SHARED.values()) + size(states)
    while _SHARED and total > SHARED_BYTES:
        total -= size(_SHARED.popitem(last=False)[1])
    _SHARED[key] = states


def clear_shared() -> None:
    """Forget every cached state of this process (memory back; the next batch computes its level anew)."""
    _SHARED.clear()


class LayerCollator:
    """Pads a batch as the uncached run would (the same tokens, mask and labels), then adds the cached
    states of the current frozen level, padded like the mask, with `cache_level`; below MIN_LEVEL, the
    plain tokenized batch. Padded positions hold zeros, not the pad token's states: the mask keeps them
    out of attention and pooling, and their labels (-100) out of the loss, so they reach nothing."""

    def __init__(self, cache: LayerCache, task: str):
        self.cache, self.task, self.pad = cache, task, cache.tokenized.collator(task)

    def __call__(self, rows: Sequence[dict]) -> dict:
        base = self.pad([{k: v for k, v in r.items() if k != ROW_KEY} for r in rows])
        level = self.cache.level()
        if not level:
            return base
        splits = {r[ROW_KEY][0] for r in rows}
        if len(splits) != 1:
            raise MTLError(f"A batch of task {self.task!r} mixes rows of several splits {sorted(splits)}.")
        states = self.cache.states(self.task, splits.pop(), level)
        chosen = [states[r[ROW_KEY][1]] for r in rows]
        mask = base["attention_mask"].bool()
        hidden = chosen[0].new_zeros(*mask.shape, chosen[0].shape[-1])
        hidden[mask] = torch.cat(chosen)  # the real tokens of every row, in order
        return {**base, "hidden_states": hidden, "cache_level": level}


class LayerCache:
    """A trainer's rows with the cached output of its model's frozen lower layers: `rows(task, split)`
    are the tokenized rows (each with its index), `collator(task)` adds the states of the level frozen
    at collation, computed on first use per task, split and level and shared through the process by
    every model whose frozen prefix has the same weights (other seeds, other trainers)."""

    def __init__(
        self,
        model: MultiTaskModel,
        tokenized: TokenizedTasks,
        device: torch.device,
        batch_size: int = 128,
        autocast=None,
    ):
        check_supported(model)
        if getattr(tokenized.tokenizer, "padding_side", "right") != "right":
            raise MTLError(
                "cache_frozen_layers needs a tokenizer that pads on the right: with left padding, absolute "
                "positions move with the padding of each batch, so a row's states depend on its batch. "
                "Set tokenizer.padding_side = 'right', or cache_frozen_layers=False."
            )
        self.model, self.tokenized, self.device, self.batch_size, self.autocast = (
            model,
            tokenized,
            device,
            batch_size,
            autocast,
        )
        self.tasks = tokenized.tasks
        self.build_seconds = 0.0  # time spent computing states (the one-off cost of each level)
        self._rows: dict[tuple[str, str], list[dict]] = {}
        self._tokens: dict[tuple[str, str], str] = {}
        self._fingerprints: dict[int, tuple[tuple, str]] = {}
        self._live: dict[tuple[str, str], tuple[object, list[torch.Tensor]]] = {}  # (key, states) in use

    def level(self) -> int:
        """The cached level now: frozen groups from the bottom, or 0 (uncached)."""
        return frozen_level(self.model)

    def fingerprint(self, level: int) -> str:
        """The exact hash of the prefix's tensors, hashed again only when one of them changed in place
        (torch's version counters; a write through `.data` bypasses them, as for the score cache)."""
        tensors = prefix_tensors(self.model.encoder, level)
        versions = tuple((id(t), t.data_ptr(), t._version) for _, _, t in tensors)
        known = self._fingerprints.get(level)
        if known is None or known[0] != versions:
            known = self._fingerprints[level] = (versions, tensor_digest(tensors))
        return known[1]

    def rows(self, task: str, split: str) -> list[dict]:
        key = (task, split)
        if key not in self._rows:
            self._rows[key] = [{**r, ROW_KEY: (split, i)} for i, r in enumerate(self.tokenized.rows(task, split))]
        return self._rows[key]

    def collator(self, task: str) -> LayerCollator:
        return LayerCollator(self, task)

    @staticmethod
    def lengths(rows: Sequence[dict]) -> list[int]:
        return TokenizedTasks.lengths(rows)

    def prepare(self, task: str, split: str) -> float:
        """Compute the states of the current level for one task and split now (not in the first batch);
        the seconds it took (0 when they were cached, or nothing is frozen)."""
        level, started = self.level(), time.perf_counter()
        if level:
            self.states(task, split, level)
        return time.perf_counter() - started if level else 0.0

    def states(self, task: str, split: str, level: int) -> list[torch.Tensor]:
        """Per row of the split, its [tokens, hidden] states after the bottom `level` groups (CPU)."""
        if split == "train_eval":  # the same sentences as part of train: their states
            train = self.states(task, "train", level)
            live = self._live.get((task, split))
            if live is None or live[0] is not train:
                live = self._live[(task, split)] = (train, [train[i] for i in self.tokenized.train_eval_ids(task)])
            return live[1]
        if (task, split) not in self._tokens:
            self._tokens[(task, split)] = _tokens_key(self.tokenized.rows(task, split))
        attention = getattr(self.model.encoder.config, "_attn_implementation", None)
        autocast = None if self.autocast is None else str(getattr(self.autocast(), "fast_dtype", "autocast"))
        key = (self.fingerprint(level), level, self._tokens[(task, split)], autocast, self.device.type, attention)
        live = self._live.get((task, split))
        if live is not None and live[0] == key:
            return live[1]
        states = _SHARED.get(key)
        if states is None:
            started = time.perf_counter()
            states = self._compute(task, split, level)
            self.build_seconds += time.perf_counter() - started
            _store(key, states)
        else:
            _SHARED.move_to_end(key)
        self._live[(task, split)] = (key, states)  # kept for this trainer even if the shared store drops it
        return states

    @torch.no_grad()
    def _compute(self, task: str, split: str, level: int) -> list[torch.Tensor]:
        """Run the prefix over the split shortest first, in eval mode, under the trainer's autocast."""
        rows = self.tokenized.rows(task, split)
        if not rows:
            return []
        tokenizer, max_length = self.tokenized.tokenizer, self.tokenized.max_length
        collate = make_collator(self.tasks[task], tokenizer, "longest", max_length)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        out: list[torch.Tensor | None] = [None] * len(rows)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                ids = order[start : start + self.batch_size]
                batch = to_device(
                    collate([{k: v for k, v in rows[i].items() if k != "labels"} for i in ids]), self.device
                )
                self._verify(batch)
                if self.autocast is not None:
                    with self.autocast():
                        hidden = run_prefix(self.model.encoder, batch, level)
                else:
                    hidden = run_prefix(self.model.encoder, batch, level)
                mask = batch["attention_mask"].bool()
                flat = hidden[mask].cpu()  # the real tokens of every row, row after row
                for i, row_states in zip(ids, torch.split(flat, mask.sum(1).tolist())):
                    out[i] = row_states
        finally:
            self.model.train(was_training)
        return out

    def _verify(self, batch: Mapping[str, torch.Tensor]) -> None:
        """Once per encoder class, attention and device type: the blocks re-run here give what the
        encoder's own forward gives (an architecture doing more between its layers is refused)."""
        encoder = self.model.encoder
        key = (type(encoder), getattr(encoder.config, "_attn_implementation", None), self.device.type)
        if key in _VERIFIED:
            return
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        expected = encoder(**inputs).last_hidden_state
        mine = run_prefix(encoder, batch, len(encoder_stack(encoder)[1]) + 1)
        real = batch["attention_mask"].bool()
        if not torch.allclose(mine[real], expected[real], atol=1e-4, rtol=1e-4):
            raise _unsupported(encoder, "re-running its blocks one by one does not reproduce its forward")
        _VERIFIED.add(key)


__all__ = [
    "MIN_LEVEL",
    "SHARED_BYTES",
    "LayerCache",
    "LayerCollator",
    "check_supported",
    "clear_shared",
    "encoder_stack",
    "frozen_level",
    "prefix_tensors",
    "run_blocks",
    "run_prefix",
    "tensor_digest",
    "upper_states",
]
