"""Audits of what moved: snapshots of the weights, which groups changed (bitwise), and a check that
the model's trainable groups still match what an optimizer holds."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from torch import nn

from .errors import FrozenParameterChanged, MTLError
from .groups import layer_groups


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter, on its own device, for `changed_groups` and `assert_frozen_unchanged`."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _same(param: torch.Tensor, before: torch.Tensor) -> bool:
    return torch.equal(param.detach(), before.to(param.device))


def changed_groups(model: nn.Module, before: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Per group: whether it is trainable now, and whether it stayed bitwise identical."""
    rows = []
    for group in layer_groups(model).values():
        changed = [n for n, p in group.params if not _same(p, before[n])]
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


def assert_frozen_unchanged(
    model: nn.Module, before: Mapping[str, torch.Tensor], frozen: set[str] | None = None
) -> None:
    """Raise if any frozen parameter (now, or the given names) differs bitwise from `before`."""
    names = frozen if frozen is not None else {n for n, p in model.named_parameters() if not p.requires_grad}
    params = dict(model.named_parameters())
    moved = [n for n in sorted(names) if not _same(params[n], before[n])]
    if moved:
        raise FrozenParameterChanged(f"{len(moved)} frozen tensors changed during training, e.g. {moved[:3]}.")


def refuse_groups_out_of_step(model: nn.Module, held: set[int]) -> None:
    """Raise, naming the fix, when groups were frozen or unfrozen on the model itself (module-level
    `freeze` / `unfreeze`) behind the back of an optimizer holding the parameters `held` (ids):
    a trainable group it lacks would never train, a frozen group it holds would still move."""
    unfrozen, frozen = [], []
    for name, group in layer_groups(model).items():
        if any(p.requires_grad and id(p) not in held for _, p in group.params):
            unfrozen.append(name)
        if any(not p.requires_grad and id(p) in held for _, p in group.params):
            frozen.append(name)
    fixes = []
    if unfrozen:
        names = ", ".join(map(repr, unfrozen))
        fixes.append(
            f"{unfrozen} became trainable but are not in the optimizer, so they would never train "
            f"(fix: trainer.unfreeze({names}))"
        )
    if frozen:
        names = ", ".join(map(repr, frozen))
        fixes.append(f"{frozen} were frozen but are still in the optimizer (fix: trainer.freeze({names}))")
    if fixes:
        raise MTLError(
            "Groups were frozen or unfrozen on the model (mtl_helpers.freeze / unfreeze) after the Trainer "
            "was built: " + "; ".join(fixes) + ". Freeze and unfreeze through the trainer, which keeps its "
            "optimizer in step; calling it now with these groups repairs the trainer."
        )
