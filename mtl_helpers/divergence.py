"""The check that stops a run at its first non-finite loss or gradient norm, before that step's update,
either at once (eager) or later without stalling the GPU (deferred, through fused AdamW's `found_inf`)."""

from __future__ import annotations

import torch

from .errors import TrainingDiverged


def _diverged(what: str, value: float, step: int, task: str) -> TrainingDiverged:
    return TrainingDiverged(
        f"The {what} became {value} at step {step} (task {task!r}); the model keeps its state "
        f"from step {step - 1}. Lower the learning rate or check the inputs."
    )


class DivergenceCheck:
    """Stops a run at the first step whose loss or gradient norm is not finite, before that step's
    update, so that the model keeps its state from the step before.

    Eager (`sync_every=1`, or an optimizer without a fused kernel): every step reads both values on
    the host and raises at once. Deferred (`sync_every > 1` with torch's fused AdamW): reading a GPU
    value makes the host wait for the device, so the check stays there. Each step's flag is folded
    into one running "a step was bad" tensor, set as the optimizer's `found_inf`: torch's fused AdamW
    skips its whole update while `found_inf` is nonzero (the mechanism GradScaler uses for inf
    gradients), so the bad step and every later one change nothing. `flush` (every `sync_every` steps
    and at the end of a fit) reads the flags on the host and raises for the first bad step.
    """

    def __init__(self, sync_every: int) -> None:
        self.sync_every = sync_every
        self._any_bad: torch.Tensor | None = None  # on the device: 1.0 once a step since the last reset was bad
        self._pending: list[tuple[int, str, torch.Tensor]] = []  # (step, task, flag) the host has not read
        self._flagged: torch.optim.Optimizer | None = None  # the optimizer whose found_inf is set

    def eager(self, optimizer: torch.optim.Optimizer) -> bool:
        return self.sync_every == 1 or not optimizer.defaults.get("fused")

    def after_backward(
        self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, norm: torch.Tensor, step: int, task: str
    ) -> None:
        """Call between backward and `optimizer.step()`: raise now (eager), or flag the step on the device."""
        if self.eager(optimizer):
            for what, value in (("loss", loss.detach()), ("gradient norm", norm)):
                if not torch.isfinite(value):
                    optimizer.zero_grad(set_to_none=True)
                    raise _diverged(what, float(value), step, task)
            return
        bad = (~torch.isfinite(loss.detach()) | ~torch.isfinite(norm)).float()
        self._any_bad = bad if self._any_bad is None else torch.maximum(self._any_bad, bad)
        optimizer.found_inf = self._any_bad
        self._flagged = optimizer
        self._pending.append((step, task, bad))

    def flush(self) -> None:
        """Read the deferred flags on the host (one synchronisation); raise for the first bad step."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if float(self._any_bad) > 0:
            step, task = next((s, t) for s, t, flag in pending if float(flag) > 0)
            self._any_bad = None
            del self._flagged.found_inf  # a later fit (say, at a lower rate) must update again
            raise _diverged("loss or gradient norm", float("nan"), step, task)


__all__ = ["DivergenceCheck"]
