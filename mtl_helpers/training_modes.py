"""Which dropout runs in training, and the per-group summary that shows it.

The book's rule: a frozen part is a fixed feature extractor, so it runs in eval mode (no dropout),
and its output does not depend on train/eval mode (which is also what makes cached features exact).
`MultiTaskModel.train()` applies it (`set_training_modes`), unless the model was built with
`dropout_in_frozen=True`. Adapters (`mtl_helpers.adapters`) follow their own trainability: a trainable
adapter runs in train mode, its own dropout included, inside a frozen pretrained encoder.
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from .adapter_layout import adapter_group_name, adapter_modules, adapter_parameters, trainable_adapter_modules
from .groups import layer_groups, partition


def _dropout_groups(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Each dropout module of the encoder with the group whose computation it belongs to.

    A dropout inside a module whose parameters all belong to one group belongs to that group. A
    dropout whose nearest parameter-holding ancestor spans several groups (a stack-level dropout,
    or embeddings spread over several modules) belongs to the embeddings if it is registered
    before the transformer blocks, else to the top of the stack (extras, or the top layer). An
    adapter's own dropout (LoRA's `lora_dropout`) belongs to that adapter's group: it is a
    hyperparameter of the adapter, on while the adapter trains, whatever the frozen weights around it.
    """
    layout = partition(model)
    buckets, list_path, n_layers = layout.buckets, layout.list_path, layout.n_layers
    group_of = {id(p): name for name, params in buckets.items() for _, p in params}
    top = "extras" if buckets["extras"] else f"layer.{n_layers - 1}"
    adapter_of = adapter_modules(model.encoder)
    out = []
    seen_blocks = False
    for name, module in model.encoder.named_modules():
        if name == list_path:
            seen_blocks = True
        if not isinstance(module, nn.Dropout):
            continue
        if id(module) in adapter_of:
            inside_blocks = name.startswith(list_path + ".")
            base = f"layer.{name[len(list_path) + 1 :].split('.')[0]}" if inside_blocks else None
            base = base or ("extras" if seen_blocks else "embeddings")
            out.append((module, adapter_group_name(*adapter_of[id(module)], base)))
            continue
        path = name.split(".")
        owner = None
        for cut in range(len(path) - 1, -1, -1):
            ancestor = model.encoder.get_submodule(".".join(path[:cut])) if cut else model.encoder
            names = {group_of[id(p)] for p in ancestor.parameters() if id(p) in group_of}
            if names:
                owner = names.pop() if len(names) == 1 else None
                break
        if owner is None:
            inside_blocks = name.startswith(list_path + ".")
            if inside_blocks:
                owner = f"layer.{name[len(list_path) + 1 :].split('.')[0]}"
            else:
                owner = top if seen_blocks else "embeddings"
        out.append((module, owner))
    return out


def frozen_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that run in eval mode during training: every module whose pretrained parameters are all
    frozen (a module holding only adapter parameters: whose parameters are all frozen), which covers
    dropout applied inside a module's own forward (BERT's attention probabilities), and every dropout
    module of a frozen group, wherever it is registered. Under LoRA this is the whole pretrained
    encoder; `set_training_modes` then puts the trainable adapters back in train mode."""
    adapters = adapter_parameters(model.encoder)
    adapter_ids = {id(p) for n, p in model.encoder.named_parameters() if n in adapters}
    frozen = {n for n, g in layer_groups(model).items() if not g.trainable}
    modules = []
    for module in [*model.encoder.modules(), *model.heads.modules()]:
        params = list(module.parameters())
        own = [p for p in params if id(p) not in adapter_ids] or params
        if own and not any(p.requires_grad for p in own):
            modules.append(module)
    modules += [m for m, group in _dropout_groups(model) if group in frozen]
    return modules


def set_training_modes(model: nn.Module) -> None:
    """The dropout rule, applied to a model just put in train mode: frozen parts in eval mode
    (`frozen_modules`), then every trainable adapter's parts (its layers, its own dropout) back in
    train mode, and the tuner layers holding one (their own flag: the pretrained layer they wrap
    stays in eval mode). A frozen transformer thus computes without dropout while activations flow
    through it into trainable adapters; LoRA's dropout is the adapter's own hyperparameter."""
    for module in frozen_modules(model):
        module.eval()
    parts, layers = trainable_adapter_modules(model.encoder)
    for module in parts:
        module.train()
    for module in layers:
        module.training = True


def dropout_in_training(model: nn.Module) -> dict[str, str]:
    """Per group, whether its dropout is active in training: "on", "off", or "none" (no dropout module)."""
    off: set[int] = set()
    if not getattr(model, "dropout_in_frozen", False):
        for module in frozen_modules(model):
            off.update(id(m) for m in module.modules())
        for module in trainable_adapter_modules(model.encoder)[0]:
            off.difference_update(id(m) for m in module.modules())
    state: dict[str, set[bool]] = {}
    for module, group in _dropout_groups(model):
        state.setdefault(group, set()).add(id(module) not in off and module.p > 0)
    for name, group in layer_groups(model).items():
        if group.is_head:
            head = model.heads[name[len("head.") :]]
            state[name] = {id(m) not in off and m.p > 0 for m in head.modules() if isinstance(m, nn.Dropout)}
    out = {}
    for name in layer_groups(model):
        flags = state.get(name, set())
        out[name] = "none" if not flags else "on" if all(flags) else "off" if not any(flags) else "partly on"
    return out


def trainable_summary(model: nn.Module) -> pd.DataFrame:
    """One row per group: role, depth, parameters, trainable parameters, state, and dropout in training."""
    dropout = dropout_in_training(model)
    rows = []
    for group in layer_groups(model).values():
        state = "trainable" if group.trainable == group.numel else "frozen" if group.trainable == 0 else "partial"
        rows.append(
            {
                "group": group.name,
                "role": group.role,
                "depth": group.depth,
                "parameters": group.numel,
                "trainable": group.trainable,
                "state": state,
                "dropout in training": dropout[group.name],
            }
        )
    return pd.DataFrame(rows).set_index("group")
