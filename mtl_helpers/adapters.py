"""Freeze every pretrained weight, train small additions: LoRA through Hugging Face `peft`, one shared
adapter or one per task, merged back into the weights at the end; and BitFit (biases only).

Choice of wrapper: `add_lora` wraps `model.encoder` with `peft.get_peft_model` (a PeftModel), peft's
documented entry point, which gives named adapters (`add_adapter`, `set_adapter`) and merging
(`merge_and_unload`). The wrapper forwards `encoder(input_ids=..., attention_mask=...)` to the
wrapped transformers model, so `MultiTaskModel` keeps working: it reads the accepted inputs and the
pooler from the wrapped model (`adapter_layout.unwrapped`). Parameter names grow a prefix and a
`base_layer` (`encoder.base_model.model.encoder.layer.0.attention.self.query.base_layer.weight`);
`layer_groups` finds the blocks by their count, not their path, so the base weights keep their
groups and the adapters get groups of their own ("lora.layer.3"; see `mtl_helpers.groups`).

Add adapters before building the Trainer: its learning rates and optimizer are set from the groups
the model has when it is built.
"""

from __future__ import annotations

import copy
import math
import numbers
import re
import warnings
from typing import TYPE_CHECKING

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from .adapter_layout import activate_adapter, adapter_parameters, is_peft_model, unwrapped
from .errors import MTLError
from .groups import freeze, transformer_blocks

if TYPE_CHECKING:
    from .model import MultiTaskModel

SCOPES = ("attention", "all-linear")
# model_type -> (the attention's query/key/value projections, the block's other linear layers), as
# suffixes of module names (peft matches a target "x" against "x" and "*.x"). From the modeling_*.py
# files of transformers; every name lies inside the transformer blocks (the pooler is not targeted).
_BERT = (("query", "key", "value"), ("attention.output.dense", "intermediate.dense", "output.dense"))
LORA_TARGETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "electra": _BERT,
    "distilbert": (("q_lin", "k_lin", "v_lin"), ("out_lin", "lin1", "lin2")),
    # pos_key_proj / pos_query_proj exist only with relative attention and share_att_key=False
    "deberta-v2": (
        ("query_proj", "key_proj", "value_proj"),
        ("pos_key_proj", "pos_query_proj", "attention.output.dense", "intermediate.dense", "output.dense"),
    ),
    "mpnet": (("q", "k", "v"), ("o", "intermediate.dense", "output.dense")),
}
RESERVED_ADAPTER_NAMES = ("embeddings", "layer", "extras")  # would read like a group's place
_ADAPTER_NAME = re.compile(r"[A-Za-z0-9_-]+")


def lora_targets(encoder: nn.Module, scope: str = "attention") -> list[str]:
    """LoRA's `target_modules` for the encoder's architecture (its config's `model_type`): "attention"
    = the query, key and value projections; "all-linear" = every linear layer of the transformer
    blocks (those, the attention's output, and the feed-forward pair)."""
    if scope not in SCOPES:
        raise MTLError(f"scope must be one of {SCOPES}, got {scope!r}.")
    model_type = getattr(getattr(encoder, "config", None), "model_type", None)
    if model_type not in LORA_TARGETS:
        raise MTLError(
            f"lora_targets does not know the module names of model_type {model_type!r} (it knows "
            f"{', '.join(sorted(LORA_TARGETS))}). Name the layers yourself: "
            "add_lora(model, ..., target_modules=['query', 'value']) with the suffixes of the module "
            "names that encoder.named_modules() lists."
        )
    attention, rest = LORA_TARGETS[model_type]
    return list(attention) if scope == "attention" else [*attention, *rest]


def check_lora_settings(rank: object, alpha: object, scope: object, layers: object, dropout: object) -> None:
    """Refuse LoRA settings that peft would reject or silently misread, naming the setting."""
    integer = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    number = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if not (integer(rank) and rank >= 1):
        raise MTLError(f"LoRA rank must be an integer >= 1, got {rank!r}.")
    if not (number(alpha) and alpha > 0):
        raise MTLError(f"LoRA alpha must be a finite number > 0 (the update is scaled by alpha / rank), got {alpha!r}.")
    if scope not in SCOPES:
        raise MTLError(f"LoRA scope must be one of {SCOPES}, got {scope!r}.")
    if layers is not None and not (integer(layers) and layers >= 1):
        raise MTLError(f"LoRA layers (the top k transformer layers) must be None or an integer >= 1, got {layers!r}.")
    if not (number(dropout) and 0 <= dropout < 1):
        raise MTLError(f"LoRA dropout must be a number in [0, 1), got {dropout!r}.")


def add_lora(
    model: MultiTaskModel,
    rank: int,
    alpha: float,
    scope: str = "attention",
    layers: int | None = None,
    adapter_name: str = "default",
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
    seed: int | None = 0,
) -> MultiTaskModel:
    """Add a LoRA adapter to `model.encoder` (in place; returns the model) and freeze every
    pretrained encoder weight. The new adapter is trainable; adapters added before keep their state;
    the heads keep theirs (trainable in a fresh model).

    `scope`: "attention" or "all-linear" (`lora_targets`), unless `target_modules` names the layers;
    `layers=k`: only the top k transformer layers get adapters (peft's `layers_to_transform`);
    `dropout`: LoRA's own dropout on the adapter's input (the frozen weights run without dropout
    either way); `seed`: the adapter's initialisation (A random, B zero) draws from its own RNG
    stream, so the same seed gives the same adapter whatever ran before (None: the global stream).
    A second call with another `adapter_name` adds a second adapter (see `add_task_adapters`).
    """
    check_lora_settings(rank, alpha, scope, layers, dropout)
    if not (isinstance(adapter_name, str) and _ADAPTER_NAME.fullmatch(adapter_name)) or (
        adapter_name in RESERVED_ADAPTER_NAMES
    ):
        raise MTLError(
            f"Adapter name {adapter_name!r}: use letters, digits, '_' and '-' (it becomes part of "
            f"group names such as 'lora.{adapter_name}.layer.0'), and none of {RESERVED_ADAPTER_NAMES}."
        )
    encoder = model.encoder
    if is_peft_model(encoder) and adapter_name in encoder.peft_config:
        raise MTLError(f"The encoder already has an adapter named {adapter_name!r}; give the new one another name.")
    list_path, blocks = transformer_blocks(encoder)
    n_layers = len(blocks)
    if layers is not None and layers > n_layers:
        raise MTLError(f"layers={layers}: the encoder has only {n_layers} transformer layers.")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules) if target_modules is not None else lora_targets(encoder, scope),
        layers_to_transform=None if layers is None else list(range(n_layers - layers, n_layers)),
        layers_pattern=None if layers is None else list_path.rsplit(".", 1)[-1],
        bias="none",
    )
    before = {id(p): p.requires_grad for p in encoder.parameters()}
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        if seed is not None:
            torch.manual_seed(seed)
        # peft asks transformers whether gradient checkpointing is on, through a name transformers 5 deprecated
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        if is_peft_model(encoder):
            encoder.add_adapter(adapter_name, config)
        else:
            model.encoder = encoder = get_peft_model(encoder, config, adapter_name=adapter_name)
    adapters = adapter_parameters(encoder)
    for name, param in encoder.named_parameters():
        if name not in adapters:
            param.requires_grad_(False)  # every pretrained weight
        elif adapters[name][1] == adapter_name:
            param.requires_grad_(True)
        else:
            param.requires_grad_(before.get(id(param), False))  # peft's add_adapter may have changed it
    if model.training:
        model.train()  # the dropout rule follows what is frozen
    return model


def add_task_adapters(
    model: MultiTaskModel, rank: int, alpha: float, tasks: list[str] | None = None, **lora
) -> MultiTaskModel:
    """One LoRA adapter per task, named after it (default: every head's task), and `model(task, batch)`
    runs the task's own adapter. All adapters stay trainable, so one Trainer's optimizer holds them
    all; a batch of task B runs B's adapter alone, so only B's adapter gets a gradient, and AdamW
    leaves the others untouched (fit(tasks=["b"]) moves neither A's adapter nor A's predictions).
    Other settings as in `add_lora` (scope, layers, dropout, target_modules); the i-th task's adapter
    is drawn from `seed + i`, so the adapters do not start alike."""
    tasks = list(model.heads) if tasks is None else list(tasks)
    unknown = [t for t in tasks if t not in model.heads]
    if unknown or not tasks:
        raise MTLError(f"add_task_adapters(tasks={tasks!r}): name some of the model's tasks {list(model.heads)}.")
    seed = lora.pop("seed", 0)
    for i, task in enumerate(tasks):
        add_lora(model, rank, alpha, adapter_name=task, seed=None if seed is None else seed + i, **lora)
    model.task_adapters = {**model.task_adapters, **{t: t for t in tasks}}
    model.use_task_adapter(tasks[0])
    return model


def use_adapter(model: MultiTaskModel, adapter_name: str) -> None:
    """Run adapter `adapter_name` from now on (for `model.embed`, which knows no task); trainable
    flags stay as they are (`adapter_layout.activate_adapter`)."""
    if not is_peft_model(model.encoder) or adapter_name not in model.encoder.peft_config:
        have = list(model.encoder.peft_config) if is_peft_model(model.encoder) else []
        raise MTLError(f"The encoder has no adapter named {adapter_name!r}; its adapters: {have}.")
    activate_adapter(model.encoder, adapter_name)


def merge_lora(model: MultiTaskModel, adapter_name: str | None = None, inplace: bool = False) -> MultiTaskModel:
    """The model with one LoRA adapter added into the pretrained weights (peft's `merge_and_unload`):
    a plain transformers encoder again, which computes what the adapted one did (up to float rounding)
    at the cost of the base model alone. A copy unless `inplace`. With several adapters (one per task),
    name the one to merge: the result then serves that task's adapter for every head."""
    if not is_peft_model(model.encoder):
        raise MTLError("The model's encoder has no LoRA adapter to merge (add one with add_lora).")
    names = list(model.encoder.peft_config)
    if adapter_name is None:
        if len(names) > 1:
            raise MTLError(
                f"The encoder has {len(names)} adapters {names}; one merged encoder holds one of them: "
                "merge_lora(model, adapter_name=...)."
            )
        adapter_name = names[0]
    if adapter_name not in names:
        raise MTLError(f"The encoder has no adapter named {adapter_name!r}; its adapters: {names}.")
    target = model if inplace else copy.deepcopy(model)
    target.encoder = target.encoder.merge_and_unload(adapter_names=[adapter_name])
    target.task_adapters = {}
    if target.training:
        target.train()
    return target


def bitfit(model: MultiTaskModel, layer_norm: bool = True) -> MultiTaskModel:
    """BitFit (Ben Zaken et al., 2022): train only the encoder's bias terms (and the heads, whose state
    is left as it is). In place; returns the model.

    The freezing API moves whole groups, so it cannot say "the biases of every group"; this freezes
    the backbone with it, then sets `requires_grad` on every parameter named `bias`. With
    `layer_norm=True` (default) LayerNorm biases train too, as in the paper, which trains all bias
    terms (the LayerNorm gains stay frozen). The layer groups become "partial"; each bias learns at
    its layer's rate. A partly trainable group is not frozen, so its dropout runs in training, as in
    full fine-tuning. A later `freeze` or `unfreeze` of a group acts on the whole group."""
    freeze(model, "backbone")
    norm_biases = {id(m.bias) for m in model.encoder.modules() if isinstance(m, nn.LayerNorm) and m.bias is not None}
    for name, param in unwrapped(model.encoder).named_parameters():
        if name.rsplit(".", 1)[-1] == "bias" and (layer_norm or id(param) not in norm_biases):
            param.requires_grad_(True)
    if model.training:
        model.train()
    return model


__all__ = [
    "LORA_TARGETS",
    "SCOPES",
    "add_lora",
    "add_task_adapters",
    "bitfit",
    "check_lora_settings",
    "lora_targets",
    "merge_lora",
    "use_adapter",
]
