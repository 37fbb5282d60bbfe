"""One partition of a multi-task model into layer groups, and freezing by group (which dropout runs
in training, and the per-group summary, are in `mtl_helpers.training_modes`).

Every group has a role and a depth, bottom to top:

    embeddings (depth 0) < layer.0 (1) < ... < layer.N-1 (N) = extras (N) < head.<task> (N+1)

`extras` holds the encoder's parameters that come after its transformer blocks (a final
LayerNorm, relative position embeddings); they sit at the top layer's depth, so rates, gradual
unfreezing and top-k training all treat them like the top layer.

An encoder wrapped by `peft` (`mtl_helpers.adapters`) keeps these groups for its pretrained weights
(under their longer names, `...query.base_layer.weight`), and each adapter's parameters form groups
of their own, one per place: role "adapter", at the depth of the group they sit in, named
"lora.layer.3" (peft's default adapter) or "lora.trec.layer.3" (an adapter named "trec"), each right
after its base group. So the adapter in layer i gets layer i's rate, and is frozen, unfrozen and
audited like any group.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from torch import nn

from .adapter_layout import adapter_alias, adapter_group_name, adapter_parameters
from .errors import MTLError, UnknownGroupError, UnsupportedEncoderError

LAYER_COUNT_FIELDS = ("num_hidden_layers", "n_layers", "num_layers", "n_layer")
ROLES = ("embeddings", "layer", "extras", "adapter", "head")


@dataclass(frozen=True)
class LayerGroup:
    """A named slice of the model: its role, its depth, its parameters and (if any) the one module owning them."""

    name: str
    role: str
    depth: int
    params: tuple[tuple[str, nn.Parameter], ...]
    module_path: str | None  # None when no single module holds exactly these parameters

    @property
    def numel(self) -> int:
        return sum(p.numel() for _, p in self.params)

    @property
    def trainable(self) -> int:
        return sum(p.numel() for _, p in self.params if p.requires_grad)

    @property
    def is_head(self) -> bool:
        return self.role == "head"

    @property
    def is_adapter(self) -> bool:
        return self.role == "adapter"


def transformer_blocks(encoder: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's ModuleList of transformer blocks, found by its length, not by its name.

    Lists nested inside another candidate (a T5 block's own list of sub-layers, which has two
    entries and so matches when the encoder has two blocks) are not blocks of the encoder.
    """
    config = getattr(encoder, "config", None)
    count = next((getattr(config, f) for f in LAYER_COUNT_FIELDS if isinstance(getattr(config, f, None), int)), None)
    if count is None:
        raise UnsupportedEncoderError(
            f"Cannot find the layer count of {type(encoder).__name__}: its config has none of "
            f"{LAYER_COUNT_FIELDS}. layer_groups supports Hugging Face encoders such as BERT, "
            "DistilBERT, RoBERTa, MiniLM, ELECTRA, DeBERTa and T5's encoder."
        )
    found = [
        (name, module)
        for name, module in encoder.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == count and any(True for _ in module.parameters())
    ]
    outermost = [(n, m) for n, m in found if not any(n != o and n.startswith(o + ".") for o, _ in found)]
    if len(outermost) != 1:
        where = ", ".join(name for name, _ in outermost) or "none"
        raise UnsupportedEncoderError(
            f"Cannot discover the transformer layers of {type(encoder).__name__}: its config says {count} "
            f"layers, and {len(outermost)} separate lists of {count} blocks with parameters were found ({where}); "
            "layer_groups needs exactly one. Encoders that share one block across depths (ALBERT) have "
            "no such list; encoders with several stacks (Funnel) have more than one."
        )
    return outermost[0]


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


@dataclass(frozen=True)
class _Partition:
    """The model's parameters per group, the block list's path, the number of blocks, and the groups."""

    buckets: dict[str, list[tuple[str, nn.Parameter]]]
    list_path: str
    n_layers: int
    groups: dict[str, LayerGroup]


# One partition per model, reused while the model holds the same parameters under the same names:
# freezing changes only requires_grad, which LayerGroup reads live, so one `trainer.unfreeze` (which
# resolves names, builds optimizer groups and re-applies the dropout rule) partitions at most once.
# Weak keys: the cache never keeps a model alive; the partition pins the parameters it names, so
# their ids in the key cannot be reused by other tensors while the entry exists.
_PARTITIONS: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, _Partition]] = weakref.WeakKeyDictionary()


def partition(model: nn.Module) -> _Partition:
    """The model's groups with the layout they were found from: parameters per group (`buckets`, with
    every base group, empty ones included), the block list's path (`list_path`) and `n_layers`."""
    return _partition(model)


def _parameter_key(model: nn.Module) -> tuple:
    return tuple((name, id(param)) for name, param in model.named_parameters())


def _partition(model: nn.Module) -> _Partition:
    """The model's partition, computed again only when its parameters changed (a new head, a cut encoder)."""
    key = _parameter_key(model)
    cached = _PARTITIONS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    partition = _compute_partition(model)
    _PARTITIONS[model] = (key, partition)
    return partition


def _compute_partition(model: nn.Module) -> _Partition:
    """Parameter names per group (embeddings, layer.i, extras, adapter groups, head.<task>), the block
    list's path, N."""
    encoder = model.encoder
    list_path, blocks = transformer_blocks(encoder)
    adapters = adapter_parameters(encoder)
    buckets: dict[str, list[tuple[str, nn.Parameter]]] = {"embeddings": []}
    buckets.update({f"layer.{i}": [] for i in range(len(blocks))})
    buckets["extras"] = []
    attached: dict[str, dict[str, list[tuple[str, nn.Parameter]]]] = {}  # base group -> adapter groups
    roles: dict[str, tuple[str, int]] = {}
    seen_layers = False
    for name, param in encoder.named_parameters():
        if name.startswith(list_path + "."):
            base = f"layer.{name[len(list_path) + 1 :].split('.')[0]}"
            seen_layers = True
        else:  # parameter order follows registration: what precedes the blocks embeds the input
            base = "extras" if seen_layers else "embeddings"
        if name in adapters:
            group = adapter_group_name(*adapters[name], base)
            attached.setdefault(base, {}).setdefault(group, []).append((f"encoder.{name}", param))
            roles[group] = ("adapter", _role_and_depth(base, len(blocks))[1])
        else:
            buckets[base].append((f"encoder.{name}", param))
    if not buckets["embeddings"]:
        raise UnsupportedEncoderError(
            f"{type(encoder).__name__} has no parameters before its first transformer layer, so no "
            "embeddings group could be formed."
        )
    # each adapter group right after the group it sits in: the bottom-to-top order holds
    buckets = {
        name: params for base in buckets for name, params in [(base, buckets[base]), *attached.get(base, {}).items()]
    }
    for task, head in model.heads.items():
        buckets[f"head.{task}"] = [(f"heads.{task}.{n}", p) for n, p in head.named_parameters()]
    groups = {}
    for name, params in buckets.items():
        if params:
            role, depth = roles.get(name) or _role_and_depth(name, len(blocks))
            groups[name] = LayerGroup(name, role, depth, tuple(params), _owner(model, [n for n, _ in params]))
    return _Partition(buckets, list_path, len(blocks), groups)


def _role_and_depth(name: str, n_layers: int) -> tuple[str, int]:
    if name == "embeddings":
        return "embeddings", 0
    if name.startswith("layer."):
        return "layer", int(name.split(".")[1]) + 1
    if name == "extras":
        return "extras", n_layers
    return "head", n_layers + 1


def layer_groups(model: nn.Module) -> dict[str, LayerGroup]:
    """Ordered groups bottom to top: embeddings, layer.0..N-1, extras (if any), head.<task>."""
    return dict(_partition(model).groups)  # a copy: a caller's edit must not reach the cached partition


def backbone_depths(model: nn.Module) -> int:
    """Number of backbone depths: the embeddings plus one per transformer layer."""
    return 1 + _partition(model).n_layers


def group_aliases(model: nn.Module) -> dict[str, list[str]]:
    """Names that stand for several groups: backbone (everything but the heads, adapters included),
    layers, heads, all; with adapters also "adapters" (every adapter group) and one name per adapter
    ("lora.default", "lora.trec")."""
    groups = layer_groups(model)
    aliases = {
        "backbone": [n for n, g in groups.items() if not g.is_head],
        "layers": [n for n, g in groups.items() if g.role in ("layer", "extras")],
        "heads": [n for n, g in groups.items() if g.is_head],
        "all": list(groups),
    }
    adapters = adapter_parameters(model.encoder)
    if adapters:
        prefix = len("encoder.")
        aliases["adapters"] = [n for n, g in groups.items() if g.is_adapter]
        for name, group in groups.items():
            if group.is_adapter:
                alias = adapter_alias(*adapters[group.params[0][0][prefix:]])
                aliases.setdefault(alias, []).append(name)
    return aliases


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
                f"Unknown layer group {name!r}. Valid groups: {', '.join(groups)}; aliases: {', '.join(aliases)}."
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
    """Backbone groups of the top `k` depths (k=0: none; extras count with the top layer)."""
    groups = layer_groups(model)
    depths = backbone_depths(model)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= depths:
        raise ValueError(
            f"k must be an integer between 0 and {depths} (the backbone's depths: embeddings and layers), got {k!r}."
        )
    return [n for n, g in groups.items() if not g.is_head and g.depth > depths - 1 - k]


def check_tasks_can_learn(model: nn.Module, tasks: list[str]) -> None:
    """Refuse training `tasks` when one's loss would reach no trainable parameter (its head and the
    whole backbone frozen): its first batch would fail inside autograd."""
    groups = layer_groups(model)
    if any(g.trainable for g in groups.values() if not g.is_head):
        return
    stuck = [t for t in tasks if not groups[f"head.{t}"].trainable]
    if not stuck:
        return
    others = [t for t in tasks if t not in stuck]
    leave_out = f"train without it (trainer.fit(tasks={others!r})), or " if others else ""
    raise MTLError(
        f"Task {stuck[0]!r} has nothing trainable on its path: its head (head.{stuck[0]}) and every "
        f"backbone group are frozen, so its loss has no gradient. Either {leave_out}unfreeze its head "
        f"or a backbone group (trainer.unfreeze('head.{stuck[0]}'), or e.g. "
        "trainer.unfreeze('layer.0'))."
    )
