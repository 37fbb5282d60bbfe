"""Optimizer parameter groups with discriminative learning rates, the slanted triangular
schedule (a torch LambdaLR), and the audit that the optimizer holds exactly the trainable set."""
from __future__ import annotations

from collections.abc import Iterable, Mapping


from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .errors import OptimizerAuditError
from .groups import layer_groups, resolve_groups


def discriminative_rates(
    model: nn.Module, lr: float, factor: float = 2.6, backbone_lr: float | None = None
) -> dict[str, float]:
    """Learning rate of every group: heads at `lr`, each lower group the one above / `factor`.

    The top backbone group gets `backbone_lr` if given, else `lr / factor` (ULMFiT, factor 2.6).
    `factor=1` gives one rate for everything.
    """
    if lr <= 0 or factor <= 0 or (backbone_lr is not None and backbone_lr <= 0):
        raise ValueError(f"Learning rates and factor must be positive, got lr={lr}, factor={factor}, backbone_lr={backbone_lr}.")
    names = list(layer_groups(model))
    heads = [n for n in names if n.startswith("head.")]
    backbone = [n for n in names if n not in heads]
    rates = {n: lr for n in heads}
    top = backbone_lr if backbone_lr is not None else lr / factor
    for depth, name in enumerate(reversed(backbone)):
        rates[name] = top / factor**depth
    return {n: rates[n] for n in names}


def _no_decay(param: nn.Parameter) -> bool:
    # Biases and LayerNorm scales are 1-D; decaying them toward zero only hurts.
    return param.ndim < 2


def param_groups_for(
    model: nn.Module, names: Iterable[str], rates: Mapping[str, float], weight_decay: float
) -> list[dict]:
    """Optimizer groups for the trainable parameters of `names`, split by decay / no decay."""
    groups = layer_groups(model)
    out = []
    for name in resolve_groups(model, *names):
        params = [(n, p) for n, p in groups[name].params if p.requires_grad]
        for suffix, decay in (("", True), ("/no_decay", False)):
            chosen = [p for _, p in params if _no_decay(p) != decay]
            if chosen:
                out.append(
                    {"params": chosen, "lr": rates[name], "weight_decay": weight_decay if decay else 0.0, "name": name + suffix}
                )
    return out


def discriminative_param_groups(
    model: nn.Module,
    lr: float,
    factor: float = 2.6,
    weight_decay: float = 0.01,
    backbone_lr: float | None = None,
) -> list[dict]:
    """Param groups of the trainable parameters only, each with its discriminative rate."""
    rates = discriminative_rates(model, lr, factor, backbone_lr)
    out = param_groups_for(model, rates, rates, weight_decay)
    trainable = [p for p in model.parameters() if p.requires_grad]
    in_groups = [p for g in out for p in g["params"]]
    # minGPT's check: every trainable parameter sits in exactly one group.
    assert len(in_groups) == len({id(p) for p in in_groups}) == len(trainable), "parameter grouping is inconsistent"
    return out


def audit_optimizer(model: nn.Module, optimizer: Optimizer) -> None:
    """Raise unless every trainable parameter is in exactly one optimizer group and no frozen one is."""
    params = dict(model.named_parameters())
    names = {id(p): n for n, p in params.items()}
    counts: dict[int, int] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            counts[id(p)] = counts.get(id(p), 0) + 1
    problems = []
    missing = [n for n, p in params.items() if p.requires_grad and id(p) not in counts]
    frozen = [names[i] for i in counts if i in names and not params[names[i]].requires_grad]
    repeated = [names.get(i, "?") for i, c in counts.items() if c > 1]
    foreign = [i for i in counts if i not in names]
    if missing:
        problems.append(f"{len(missing)} trainable tensors are in no group (e.g. {missing[:2]})")
    if frozen:
        problems.append(f"{len(frozen)} frozen tensors are in the optimizer (e.g. {frozen[:2]})")
    if repeated:
        problems.append(f"{len(repeated)} tensors are in more than one group (e.g. {repeated[:2]})")
    if foreign:
        problems.append(f"{len(foreign)} tensors in the optimizer do not belong to the model")
    if problems:
        raise OptimizerAuditError(
            "Optimizer audit failed: " + "; ".join(problems) + ". Rebuild the optimizer after freezing, "
            "or use Trainer.unfreeze, which adds newly trainable groups itself."
        )


def lr_table(optimizer: Optimizer) -> dict[str, float]:
    """Current learning rate of each named optimizer group."""
    return {g.get("name", str(i)): g["lr"] for i, g in enumerate(optimizer.param_groups)}


def slanted_triangular(optimizer: Optimizer, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> LambdaLR:
    """ULMFiT's slanted triangular rates: a short linear rise to each group's rate, a long linear decay.

    Multiplier at step t (Howard & Ruder 2018, eq. 3): (1 + p (ratio - 1)) / ratio with p rising
    from 0 to 1 over the first `cut_frac` of the steps, then falling back to 0.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}.")
    cut = max(1, int(total_steps * cut_frac))

    def multiplier(step: int) -> float:
        if step < cut:
            p = step / cut
        else:
            p = 1 - (step - cut) / max(1, total_steps - cut)
        return (1 + max(0.0, p) * (ratio - 1)) / ratio

    return LambdaLR(optimizer, multiplier)


def constant_schedule(optimizer: Optimizer) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: 1.0)


def gradual_unfreezing_stages(model: nn.Module, n_stages: int | None = None) -> list[list[str]]:
    """Groups to unfreeze at each stage: the heads first, then one more backbone group from the top."""
    names = list(layer_groups(model))
    heads = [n for n in names if n.startswith("head.")]
    backbone = [n for n in names if n not in heads and n != "encoder.other"]
    top_extra = ["encoder.other"] if "encoder.other" in names else []
    stages = [heads]
    for i, name in enumerate(reversed(backbone)):
        stages.append([name] + (top_extra if i == 0 else []))
    return stages if n_stages is None else stages[:n_stages]


__all__ = [
    "audit_optimizer",
    "constant_schedule",
    "discriminative_param_groups",
    "discriminative_rates",
    "gradual_unfreezing_stages",
    "lr_table",
    "param_groups_for",
    "slanted_triangular",
]


