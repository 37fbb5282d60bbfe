"""Layer groups of any Hugging Face encoder (bottom to top), freezing, and audits of what moved."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from .errors import FrozenParameterChanged, UnknownGroupError, UnsupportedEncoderError

LAYER_COUNT_FIELDS = ("num_hidden_layers", "n_layers", "num_layers", "n_layer")


@dataclass(frozen=True)
class LayerGroup:
    """A named slice of the model: its parameters and the module that owns all of them."""

    name: str
    params: tuple[tuple[str, nn.Parameter], ...]
    module_path: str | None  # None when no single module holds exactly these parameters

    @property
    def numel(self) -> int:
        return sum(p.numel() for _, p in self.params)

    @property
    def trainable(self) -> int:
        return sum(p.numel() for _, p in self.params if p.requires_grad)


def _layer_list(encoder: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's ModuleList of transformer blocks, found by its length, not by its name."""
    config = getattr(encoder, "config", None)
    count = next((getattr(config, f) for f in LAYER_COUNT_FIELDS if isinstance(getattr(config, f, None), int)), None)
    if count is None:
        raise UnsupportedEncoderError(
            f"Cannot find the layer count of {type(encoder).__name__}: its config has none of "
            f"{LAYER_COUNT_FIELDS}. layer_groups supports Hugging Face encoders such as BERT, "
            "DistilBERT, RoBERTa, MiniLM, ELECTRA and DeBERTa."
        )
    found = [
        (name, module)
        for name, module in encoder.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == count and any(True for _ in module.parameters())
    ]
    if len(found) != 1:
        where = ", ".join(name for name, _ in found) or "none"
        raise UnsupportedEncoderError(
            f"Cannot discover the transformer layers of {type(encoder).__name__}: expected exactly one "
            f"list of {count} blocks with parameters, found {len(found)} ({where}). Encoders that share "
            "one block across depths (ALBERT) or nest several stacks (Funnel) have no per-layer groups."
        )
    return found[0]


def _owner(model: nn.Module, names: list[str]) -> str | None:
    """Deepest module path holding all `names` and nothing else, or None."""
    parts = [n.split(".")[:-1] for n in names]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    path = ".".join(common)
    if not path:
        return None
    owned = {f"{path}.{n}" for n, _ in model.get_submodule(path).named_parameters()}
    return path if owned == set(names) else None


def layer_groups(model: nn.Module) -> dict[str, LayerGroup]:
    """Ordered groups bottom to top: embeddings, layer.0..N-1, encoder.other (if any), head.<task>."""
    encoder = model.encoder
    list_path, blocks = _layer_list(encoder)
    buckets: dict[str, list[tuple[str, nn.Parameter]]] = {"embeddings": []}
    buckets.update({f"layer.{i}": [] for i in range(len(blocks))})
    buckets["encoder.other"] = []
    seen_layers = False
    for name, param in encoder.named_parameters():
        if name.startswith(list_path + "."):
            index = name[len(list_path) + 1 :].split(".")[0]
            buckets[f"layer.{index}"].append((f"encoder.{name}", param))
            seen_layers = True
        else:  # parameter order follows registration: what precedes the blocks embeds the input
            buckets["encoder.other" if seen_layers else "embeddings"].append((f"encoder.{name}", param))
    if not buckets["embeddings"]:
        raise UnsupportedEncoderError(
            f"{type(encoder).__name__} has no parameters before its first transformer layer, so no "
            "embeddings group could be formed."
        )
    for task, head in model.heads.items():
        buckets[f"head.{task}"] = [(f"heads.{task}.{n}", p) for n, p in head.named_parameters()]
    return {
        name: LayerGroup(name, tuple(params), _owner(model, [n for n, _ in params]))
        for name, params in buckets.items()
        if params
    }


def group_aliases(model: nn.Module) -> dict[str, list[str]]:
    """Names that stand for several groups: backbone, layers, heads, all."""
    names = list(layer_groups(model))
    heads = [n for n in names if n.startswith("head.")]
    backbone = [n for n in names if n not in heads]
    return {
        "backbone": backbone,
        "layers": [n for n in names if n.startswith("layer.")],
        "heads": heads,
        "all": names,
    }


def resolve_groups(model: nn.Module, *names: str) -> list[str]:
    """Expand aliases and check every name; the result keeps bottom-to-top order."""
    groups = layer_groups(model)
    aliases = group_aliases(model)
    wanted: set[str] = set()
    for name in names:
        if name in groups:
            wanted.add(name)
        elif name in aliases:
            wanted.update(aliases[name])
        else:
            raise UnknownGroupError(
                f"Unknown layer group {name!r}. Valid groups: {', '.join(groups)}; "
                f"aliases: {', '.join(aliases)}."
            )
    return [n for n in groups if n in wanted]


def _set_trainable(model: nn.Module, names: tuple[str, ...], flag: bool) -> list[str]:
    chosen = resolve_groups(model, *names)
    groups = layer_groups(model)
    for name in chosen:
        for _, param in groups[name].params:
            param.requires_grad_(flag)
            if not flag:
                param.grad = None  # a stale gradient must not reach an optimizer step
    if model.training:
        model.train()  # re-apply the dropout rule for frozen parts
    return chosen


def freeze(model: nn.Module, *names: str) -> list[str]:
    """Stop training these groups (names or aliases); LayerNorm and biases included."""
    return _set_trainable(model, names, False)


def unfreeze(model: nn.Module, *names: str) -> list[str]:
    """Train these groups (names or aliases) again."""
    return _set_trainable(model, names, True)


def train_only(model: nn.Module, *names: str) -> list[str]:
    """Freeze everything, then unfreeze exactly these groups."""
    freeze(model, "all")
    return unfreeze(model, *names) if names else []


def top_groups(model: nn.Module, k: int) -> list[str]:
    """Names of the top `k` backbone groups (k=0: none), e.g. the last k transformer layers."""
    backbone = [n for n in layer_groups(model) if not n.startswith("head.") and n != "encoder.other"]
    if not 0 <= k <= len(backbone):
        raise ValueError(f"k must be between 0 and {len(backbone)} (the backbone groups), got {k}.")
    extra = ["encoder.other"] if k and "encoder.other" in layer_groups(model) else []
    return backbone[len(backbone) - k :] + extra


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """Modules whose every parameter is frozen: these run in eval mode (no dropout)."""
    modules = []
    for group in layer_groups(model).values():
        if group.module_path and not any(p.requires_grad for _, p in group.params):
            modules.append(model.get_submodule(group.module_path))
    return modules


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_summary(model: nn.Module) -> pd.DataFrame:
    """One row per group: parameters, trainable parameters, state, and dropout during training."""
    rows = []
    for group in layer_groups(model).values():
        state = "trainable" if group.trainable == group.numel else "frozen" if group.trainable == 0 else "partial"
        rows.append(
            {
                "group": group.name,
                "parameters": group.numel,
                "trainable": group.trainable,
                "state": state,
                # what train() will do: frozen parts run without dropout unless dropout_in_frozen
                "dropout in training": "off" if state == "frozen" and group.module_path and not model.dropout_in_frozen else "on",
            }
        )
    return pd.DataFrame(rows).set_index("group")


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter, for `changed_groups` and `assert_frozen_unchanged`."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed_groups(model: nn.Module, before: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Per group: whether it is trainable now, and whether it stayed bitwise identical."""
    rows = []
    for group in layer_groups(model).values():
        changed = [n for n, p in group.params if not torch.equal(p.detach().cpu(), before[n].cpu())]
        rows.append(
            {
                "group": group.name,
                "trainable": group.trainable > 0,
                "tensors": len(group.params),
                "changed tensors": len(changed),
                "bitwise identical": not changed,
            }
        )
    return pd.DataFrame(rows).set_index("group")


def assert_frozen_unchanged(model: nn.Module, before: Mapping[str, torch.Tensor], frozen: set[str] | None = None) -> None:
    """Raise if any frozen parameter (now, or the given names) differs bitwise from `before`."""
    names = frozen if frozen is not None else {n for n, p in model.named_parameters() if not p.requires_grad}
    params = dict(model.named_parameters())
    moved = [n for n in sorted(names) if not torch.equal(params[n].detach().cpu(), before[n].cpu())]
    if moved:
        raise FrozenParameterChanged(f"{len(moved)} frozen tensors changed during training, e.g. {moved[:3]}.")
