"""Where adapters sit in an encoder wrapped by Hugging Face `peft`, and how to switch between them,
found by duck typing so that the low modules (`groups`, `model`) need not import peft.

peft's tuner layers (LoRA's `Linear`, and the layers of its other methods) declare the names of the
dictionaries holding each adapter's weights (`adapter_layer_names`: `lora_A`, `lora_B`, ...) and of
its other per-adapter state (`other_param_names`: `lora_dropout`, `scaling`, ...); every such
dictionary is keyed by the adapter's name. A parameter `...query.lora_A.trec.weight` belongs to the
LoRA adapter "trec"; `...query.base_layer.weight` is the pretrained weight it wraps.
"""

from __future__ import annotations

from torch import nn

DEFAULT_ADAPTER = "default"  # peft's name for an adapter added without one


def _tuner_layers(root: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every peft tuner layer under `root`."""
    return [
        (path, module)
        for path, module in root.named_modules()
        if isinstance(getattr(module, "adapter_layer_names", None), tuple)
        and isinstance(getattr(module, "other_param_names", None), tuple)
    ]


def _per_adapter(module: nn.Module, attributes: tuple[str, ...]):
    """(attribute, adapter name, entry) of each ModuleDict / ParameterDict entry of a tuner layer."""
    for attribute in attributes:
        holder = getattr(module, attribute, None)
        if isinstance(holder, (nn.ModuleDict, nn.ParameterDict)):
            for key in holder.keys():
                yield attribute, key, holder[key]


def adapter_kind(module: nn.Module) -> str:
    """The method's prefix of a tuner layer: "lora" (from `lora_A`), "ia3", "vera", ..."""
    return module.adapter_layer_names[0].split("_")[0]


def adapter_parameters(root: nn.Module) -> dict[str, tuple[str, str]]:
    """Parameter name (as `root.named_parameters()` spells it) -> (kind, adapter name), for every
    adapter parameter under `root`; the pretrained weights a tuner layer wraps are not among them."""
    out: dict[str, tuple[str, str]] = {}
    for path, module in _tuner_layers(root):
        prefix = f"{path}." if path else ""
        for attribute, key, entry in _per_adapter(module, module.adapter_layer_names):
            where = (adapter_kind(module), key)
            if isinstance(entry, nn.Parameter):
                out[f"{prefix}{attribute}.{key}"] = where
            else:
                out.update({f"{prefix}{attribute}.{key}.{n}": where for n, _ in entry.named_parameters()})
    return out


def adapter_modules(root: nn.Module) -> dict[int, tuple[str, str]]:
    """id(module) -> (kind, adapter name) for every module that belongs to one adapter (its weights'
    layers and its own dropout, `lora_dropout.<name>`)."""
    out: dict[int, tuple[str, str]] = {}
    for _, module in _tuner_layers(root):
        attributes = module.adapter_layer_names + module.other_param_names
        for _, key, entry in _per_adapter(module, attributes):
            if isinstance(entry, nn.Module):
                out.update({id(m): (adapter_kind(module), key) for m in entry.modules()})
    return out


def adapter_group_name(kind: str, adapter: str, base_group: str) -> str:
    """The layer group of an adapter's parameters at a base group: "lora.layer.3" for peft's default
    adapter, "lora.trec.layer.3" for an adapter named "trec"."""
    return f"{kind}.{base_group}" if adapter == DEFAULT_ADAPTER else f"{kind}.{adapter}.{base_group}"


def adapter_alias(kind: str, adapter: str) -> str:
    """The name standing for all groups of one adapter: "lora.default", "lora.trec"."""
    return f"{kind}.{adapter}"


def is_peft_model(encoder: nn.Module) -> bool:
    """Whether `encoder` is a peft wrapper (PeftModel): it has adapters registered by name."""
    return isinstance(getattr(encoder, "peft_config", None), dict) and callable(
        getattr(encoder, "get_base_model", None)
    )


def unwrapped(encoder: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper, or `encoder` itself."""
    return encoder.get_base_model() if is_peft_model(encoder) else encoder


def activate_adapter(encoder: nn.Module, name: str) -> None:
    """Make adapter `name` the one that runs in `encoder`'s forward, leaving every parameter's
    `requires_grad` as it was.

    peft's `set_adapter` also makes the chosen adapter trainable and freezes the others; here what
    trains is the freezing API's business (and a Trainer's optimizer must keep holding every task's
    adapter), so the flags are put back. An adapter that does not run in a forward gets no gradient,
    and AdamW leaves parameters without a gradient untouched: training task B with B's adapter
    active moves neither task A's adapter nor, through it, task A's predictions."""
    if getattr(encoder, "active_adapter", None) == name:
        return
    flags = [(p, p.requires_grad) for p in encoder.parameters()]
    encoder.set_adapter(name)
    for param, flag in flags:
        param.requires_grad_(flag)


def trainable_adapter_modules(root: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(parts, layers): the modules of every adapter that has a trainable parameter in a tuner layer
    (its weights' layers and its own dropout), and the tuner layers holding such an adapter."""
    parts, layers = [], []
    for _, module in _tuner_layers(root):
        trainable = set()
        for _, key, entry in _per_adapter(module, module.adapter_layer_names):
            params = [entry] if isinstance(entry, nn.Parameter) else list(entry.parameters())
            if any(p.requires_grad for p in params):
                trainable.add(key)
        if trainable:
            layers.append(module)
        attributes = module.adapter_layer_names + module.other_param_names
        parts += [e for _, key, e in _per_adapter(module, attributes) if key in trainable and isinstance(e, nn.Module)]
    return parts, layers
