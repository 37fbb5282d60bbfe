"""From task rows to batches: tokenizing, dynamic padding, length buckets, seeded loaders, and the
multi-task stream of (task, batch) that the Trainer trains on. Usable on its own."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from .tasks import TaskData

SAMPLING = ("proportional", "round_robin", "temperature")


@dataclass(frozen=True)
class WordAlignment:
    """Which words of a token-task sentence the model predicts, so that scoring can cover every word.

    `labels`: the gold tag id of every word; `scored`: the word of each labelled sub-token, in order
    (the model's predictions belong to these words); `cut_at`: the first word that `max_length` cut
    off (len(labels) when nothing was cut). A word below `cut_at` and not in `scored` has no sub-token
    at all (the tokenizer drops some characters, e.g. an emoji's variation selector).
    """

    labels: tuple[int, ...]
    scored: tuple[int, ...]
    cut_at: int


def _encode_token_rows(
    rows: list[dict], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> tuple[list[dict], list[WordAlignment]]:
    enc = tokenizer([r["text"] for r in rows], is_split_into_words=True, truncation=True, max_length=max_length)
    out, alignments = [], []
    for i, r in enumerate(rows):
        labels, scored, previous = [], [], None
        word_ids = enc.word_ids(i)
        for word in word_ids:
            first = word is not None and word != previous
            labels.append(r["label"][word] if first else -100)
            if first:
                scored.append(word)
            previous = word
        # the tokenizer keeps what truncation removed: a sentence was cut iff it overflowed, and then
        # every word after the last one with a kept sub-token is gone
        truncated = bool(enc.encodings[i].overflowing)
        kept = [w for w in word_ids if w is not None]
        cut_at = (max(kept) + 1 if kept else 0) if truncated else len(r["text"])
        out.append({**{k: enc[k][i] for k in enc.keys()}, "labels": labels})
        alignments.append(WordAlignment(tuple(r["label"]), tuple(scored), cut_at))
    return out, alignments


def encode_rows(
    task: TaskData, rows: list[dict], tokenizer: PreTrainedTokenizerBase, max_length: int = 128
) -> list[dict]:
    """Token ids per row, unpadded; token tasks label each word's first sub-token, -100 elsewhere."""
    if not rows:
        return []
    if task.level == "sentence":
        enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
        return [{**{k: enc[k][i] for k in enc.keys()}, "labels": r["label"]} for i, r in enumerate(rows)]
    return _encode_token_rows(rows, tokenizer, max_length)[0]


def word_alignments(
    task: TaskData, rows: list[dict], tokenizer: PreTrainedTokenizerBase, max_length: int = 128
) -> list[WordAlignment]:
    """Per row of a token task, which words `encode_rows` gives a prediction (see WordAlignment)."""
    if task.level != "token":
        raise ValueError(f"Word alignments exist for token tasks only; {task.name!r} is {task.level}-level.")
    return _encode_token_rows(rows, tokenizer, max_length)[1] if rows else []


def make_collator(task: TaskData, tokenizer: PreTrainedTokenizerBase, padding: str = "longest", max_length: int = 128):
    """Pads each batch to its longest row (dynamic) or to `max_length` (padding='max_length')."""
    if padding not in ("longest", "max_length"):
        raise ValueError(f"padding must be 'longest' (dynamic) or 'max_length', got {padding!r}.")
    kwargs = {"padding": padding, "max_length": max_length if padding == "max_length" else None}
    if task.level == "token":
        return DataCollatorForTokenClassification(tokenizer, **kwargs)
    return DataCollatorWithPadding(tokenizer, **kwargs)


def task_schedule(
    batches: Mapping[str, int],
    strategy: str = "proportional",
    temperature: float = 2.0,
    rng: np.random.Generator | None = None,
) -> list[str]:
    """The task of each step of one epoch (sum of the tasks' batch counts).

    proportional: every task's batches exactly once, shuffled; round_robin: tasks in turn;
    temperature: tasks drawn with probability proportional to size ** (1 / temperature).
    """
    rng = rng or np.random.default_rng(0)
    names = list(batches)
    total = sum(batches.values())
    if strategy == "proportional":
        order = [t for t in names for _ in range(batches[t])]
        return [order[i] for i in rng.permutation(len(order))]
    if strategy == "round_robin":
        return [names[i % len(names)] for i in range(total)]
    if strategy == "temperature":
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        weights = np.array([batches[t] for t in names], dtype=float) ** (1.0 / temperature)
        return list(rng.choice(names, size=total, p=weights / weights.sum()))
    raise ValueError(f"Unknown sampling strategy {strategy!r}; use one of {', '.join(SAMPLING)}.")


def make_loader(
    rows: Sequence[dict],
    collate,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    lengths: Sequence[int] | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A loader with its own generator (a DataLoader without one draws from the global RNG and shifts
    dropout); `lengths` turns on length-grouped batches (similar lengths, little padding);
    `pin_memory` puts batches in page-locked memory, so a non-blocking copy to a GPU overlaps compute."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    sampler = None
    if shuffle and lengths is not None:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        sampler = LengthGroupedSampler(batch_size, lengths=list(lengths), generator=generator)
    return DataLoader(
        list(rows),
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        generator=generator,
        collate_fn=collate,
        pin_memory=pin_memory,
    )


class TokenizedTasks:
    """Tokenized rows of each task and split (computed on first use) and their collators.

    A fixed slice of each task's training rows, as large as its validation split, is available as
    the split "train_eval": scoring it against validation gives the train/validation gap.
    """

    def __init__(
        self,
        tasks: Mapping[str, TaskData],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 128,
        padding: str = "longest",
    ):
        self.tasks, self.tokenizer, self.max_length, self.padding = dict(tasks), tokenizer, max_length, padding
        self._rows: dict[tuple[str, str], list[dict]] = {}
        self._alignments: dict[tuple[str, str], list[WordAlignment]] = {}

    def train_eval_ids(self, task: str) -> list[int]:
        splits = self.tasks[task].splits
        n = min(len(splits["train"]), len(splits["validation"]))
        return sorted(np.random.default_rng(0).permutation(len(splits["train"]))[:n].tolist())

    def source_rows(self, task: str, split: str) -> list[dict]:
        splits = self.tasks[task].splits
        if split == "train_eval":
            return [splits["train"][i] for i in self.train_eval_ids(task)]
        if split not in splits:
            raise KeyError(f"Task {task!r} has no split {split!r}; it has {sorted(splits)} and 'train_eval'.")
        return splits[split]

    def rows(self, task: str, split: str) -> list[dict]:
        key = (task, split)
        if key not in self._rows:
            if self.tasks[task].level == "token":  # one tokenization gives both rows and word alignments
                source = self.source_rows(task, split)
                self._rows[key], self._alignments[key] = (
                    _encode_token_rows(source, self.tokenizer, self.max_length) if source else ([], [])
                )
            else:
                source = self.source_rows(task, split)
                self._rows[key] = encode_rows(self.tasks[task], source, self.tokenizer, self.max_length)
        return self._rows[key]

    def alignments(self, task: str, split: str) -> list[WordAlignment]:
        """Per row of a token task's split, in the order of `rows`: its words and which ones are scored."""
        if self.tasks[task].level != "token":
            raise ValueError(f"Word alignments exist for token tasks only; {task!r} is {self.tasks[task].level}-level.")
        self.rows(task, split)
        return self._alignments[(task, split)]

    def collator(self, task: str):
        return make_collator(self.tasks[task], self.tokenizer, self.padding, self.max_length)

    @staticmethod
    def lengths(rows: Sequence[dict]) -> list[int]:
        return [len(r["input_ids"]) for r in rows]


def multitask_stream(
    loaders: Mapping[str, DataLoader],
    sampling: str = "proportional",
    temperature: float = 2.0,
    rng: np.random.Generator | None = None,
) -> Iterator[tuple[str, dict]]:
    """An endless stream of (task, batch): one epoch's task order at a time, each task's loader
    restarting when its data runs out before the epoch's schedule does."""
    rng = rng or np.random.default_rng(0)
    per_epoch = {t: len(loader) for t, loader in loaders.items()}
    iterators = {t: iter(loader) for t, loader in loaders.items()}
    schedule: list[str] = []
    while True:
        if not schedule:
            schedule = task_schedule(per_epoch, sampling, temperature, rng)[::-1]
        task = schedule.pop()
        try:
            batch = next(iterators[task])
        except StopIteration:
            iterators[task] = iter(loaders[task])
            batch = next(iterators[task])
        yield task, batch


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors on `device`; other values (a cached batch's `cache_level`) as they are."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


__all__ = [
    "TokenizedTasks",
    "WordAlignment",
    "default_collate",
    "encode_rows",
    "make_collator",
    "make_loader",
    "multitask_stream",
    "task_schedule",
    "to_device",
    "word_alignments",
]
