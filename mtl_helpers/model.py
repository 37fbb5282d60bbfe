"""`MultiTaskModel`: one shared encoder with mean pooling, and named task heads."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapter_layout import activate_adapter, unwrapped
from .encoder import mean_pool
from .errors import MTLError
from .layer_cache import upper_states
from .training_modes import set_training_modes

if TYPE_CHECKING:
    from .tasks import TaskData

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class SentenceHead(nn.Module):
    """Dropout and a linear classifier over the pooled sentence embedding."""

    level = "sentence"

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    @property
    def num_labels(self) -> int:
        return self.classifier.out_features

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(states))


class TokenHead(SentenceHead):
    """The same classifier applied to every token state (named-entity recognition)."""

    level = "token"


class MultiTaskModel(nn.Module):
    """A shared encoder whose mean-pooled output feeds one head per task; `model(task, batch)`.

    The encoder may be wrapped by `peft` (`mtl_helpers.adapters.add_lora`). With per-task adapters,
    `task_adapters` maps each task to its adapter's name, and `model(task, batch)` runs that adapter
    (`embed` and `token_states`, which know no task, run whichever adapter is active).

    Dropout in training: a frozen part is a fixed feature extractor, so it runs in eval mode
    (`train()` below; `training_modes.frozen_modules` says which). Under LoRA the pretrained weights are all
    frozen, so the whole transformer computes without dropout even while activations flow through it
    into trainable adapters; LoRA's own dropout (on the adapter's input) is the adapter's
    hyperparameter (`add_lora(dropout=...)`, default 0) and runs while the adapter trains.
    """

    def __init__(
        self,
        encoder: PreTrainedModel,
        heads: Mapping[str, SentenceHead],
        dropout_in_frozen: bool = False,
    ):
        super().__init__()
        if not heads:
            raise MTLError("MultiTaskModel needs at least one head, e.g. {'trec': SentenceHead(384, 6)}.")
        # Mean pooling replaces BERT's pooler; left in place, its weights would never get a
        # gradient and would blur the trainable-parameter counts. (Inside a peft wrapper: the
        # wrapped model's pooler.)
        if getattr(unwrapped(encoder), "pooler", None) is not None:
            unwrapped(encoder).pooler = None
        heads = dict(heads)
        owners: dict[int, str] = {}
        for task, head in heads.items():
            if id(head) in owners:
                raise MTLError(
                    f"Tasks {owners[id(head)]!r} and {task!r} share one head object; give every task its "
                    "own head (MultiTaskModel.for_tasks builds them), or train them as one task."
                )
            owners[id(head)] = task
        encoder_tensors = {p.data_ptr() for p in encoder.parameters()}
        for task, head in heads.items():
            tied = [n for n, p in head.named_parameters() if p.data_ptr() in encoder_tensors]
            if tied:
                raise MTLError(
                    f"Head {task!r} shares its weight {tied[0]!r} with the encoder (a tied weight); "
                    "freezing one would freeze both. Give the head its own parameters."
                )
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        # Off by default: a frozen part is a fixed feature extractor, so its output must not
        # depend on train/eval mode (this is also what makes cached features exact).
        self.dropout_in_frozen = dropout_in_frozen
        self.task_adapters: dict[str, str] = {}  # task -> adapter name, with one adapter per task
        accepted = inspect.signature(unwrapped(encoder).forward).parameters  # a peft wrapper takes **kwargs
        self._encoder_inputs = tuple(k for k in ENCODER_INPUTS if k in accepted)

    @classmethod
    def for_tasks(
        cls, encoder: PreTrainedModel, tasks: Iterable, dropout: float = 0.1, seed: int | None = 0, **kwargs
    ) -> "MultiTaskModel":
        """One head per task, sized from each task's labels and level; heads initialised from `seed`."""
        hidden = encoder.config.hidden_size
        tasks = list(tasks)
        names = [t.name for t in tasks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise MTLError(f"Two tasks are named {twice[0]!r}; each task needs its own name and head.")
        heads = {}
        # A private RNG stream: the same seed gives the same heads, whatever ran before.
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            for task in tasks:
                head_cls = TokenHead if task.level == "token" else SentenceHead
                heads[task.name] = head_cls(hidden, len(task.label_names), dropout)
        return cls(encoder, heads, **kwargs)

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    def head(self, task: str) -> SentenceHead:
        if task not in self.heads:
            raise MTLError(f"The model has no head for task {task!r}; its heads are {sorted(self.heads)}.")
        return self.heads[task]

    def token_states(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The top layer's state of every token; a batch carrying `hidden_states` (the cached output of
        frozen lower layers, `layer_cache.LayerCache`) runs only the layers above them."""
        if "hidden_states" in batch:
            return upper_states(self.encoder, batch)
        inputs = {k: batch[k] for k in self._encoder_inputs if k in batch}
        return self.encoder(**inputs).last_hidden_state

    def embed(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sentence embeddings (mean pooling over the last hidden state)."""
        return mean_pool(self.token_states(batch), batch["attention_mask"])

    def forward(self, task: str, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        head = self.head(task)
        if "features" in batch:  # cached sentence embeddings: the backbone is skipped
            return head(batch["features"])
        if self.task_adapters:
            self.use_task_adapter(task)
        states = self.token_states(batch)
        if head.level == "token":
            return head(states)
        return head(mean_pool(states, batch["attention_mask"]))

    def use_task_adapter(self, task: str) -> None:
        """Run task `task`'s adapter in the encoder from now on (`forward` calls this itself)."""
        if task not in self.task_adapters:
            raise MTLError(
                f"The model has one adapter per task, but none for {task!r} (adapters: {self.task_adapters}); "
                "add one with mtl_helpers.adapters.add_task_adapters."
            )
        activate_adapter(self.encoder, self.task_adapters[task])

    def train(self, mode: bool = True) -> "MultiTaskModel":
        super().train(mode)
        if mode and not self.dropout_in_frozen:
            set_training_modes(self)
        return self


def check_model_fits(model: MultiTaskModel, tokenizer: PreTrainedTokenizerBase, tasks: Iterable[TaskData]) -> None:
    """Refuse a model whose heads do not match the tasks (level, number of labels), or whose embedding
    table is smaller than the tokenizer's vocabulary, before any training starts."""
    for task in tasks:
        head = model.head(task.name)
        if head.level != task.level or head.num_labels != len(task.label_names):
            raise MTLError(
                f"Head {task.name!r} is a {head.level} head with {head.num_labels} classes, but task {task.name!r} "
                f"is {task.level}-level with {len(task.label_names)} labels. Build the model with "
                "MultiTaskModel.for_tasks."
            )
    rows = model.encoder.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise MTLError(
            f"The tokenizer has {len(tokenizer)} tokens but the encoder's embedding table only "
            f"{rows} rows: token ids beyond it would fail at the first step. Use the tokenizer that "
            "belongs to the encoder (load_encoder returns both), or call "
            "encoder.resize_token_embeddings(len(tokenizer))."
        )
