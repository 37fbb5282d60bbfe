"""Choosing the regularisation of a logistic regression on the validation split: one log grid of C
(the inverse penalty), extended by a factor of 10 past whichever edge holds the best score, up to
stated limits, so that a chosen C at the edge of the grid is either moved inside it or said to be at
the edge. Shared by the TF-IDF baseline (`baselines`) and the probe of every layer (`layer_probe`).

The rule: fit at every C of the grid on the training rows, score each fit on validation, choose the
highest score (ties: the smallest C, the strongest penalty among equals). While the chosen C is the
smallest tried and C / 10 is within `limits`, try C / 10 too (likewise C * 10 at the top). The edge
status is "interior" when the chosen C has a tried value on both sides, else
"edge: low, could not extend" or "edge: high, could not extend". The fit is never refit on
train + validation: validation only chooses, and the test split stays for the verdicts."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from .errors import MTLError

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # the starting grid: five points, a factor 10 apart
C_LIMITS = (1e-4, 1e4)  # the grid is never extended beyond these
EXTEND_FACTOR = 10.0
MIN_GRID_POINTS = 4
MAX_ITER = 5000  # lbfgs iterations per fit; a fit that stops there is marked "converged": False


@dataclass
class CSweep:
    """The outcome of `sweep_c`: the score at every C tried, the chosen C, where it lies, and its fit."""

    table: pd.DataFrame  # index "C" (ascending); columns "validation accuracy", "converged", "extended"
    chosen: float
    edge: str  # "interior", "edge: low, could not extend" or "edge: high, could not extend"
    model: object = field(repr=False)  # the fit at the chosen C

    @property
    def extended(self) -> list[float]:
        """The values of C tried beyond the starting grid."""
        return [float(c) for c in self.table.index[self.table["extended"]]]

    @property
    def best_score(self) -> float:
        return float(self.table.loc[self.chosen, "validation accuracy"])


def check_grid(grid: Sequence[float], limits: tuple[float, float] = C_LIMITS) -> list[float]:
    """The grid sorted, after checking it: at least MIN_GRID_POINTS distinct positive values within `limits`."""
    low, high = limits
    if not (0 < low <= high and math.isfinite(high)):
        raise MTLError(f"limits={limits!r}: give (low, high) with 0 < low <= high, both finite.")
    values = sorted({float(c) for c in grid})
    if len(values) < MIN_GRID_POINTS:
        raise MTLError(
            f"grid={list(grid)!r}: the grid of C needs at least {MIN_GRID_POINTS} distinct values (a log grid "
            f"such as {C_GRID}), so that a best value inside it can be told from one at its edge."
        )
    outside = [c for c in values if not (math.isfinite(c) and low * (1 - 1e-9) <= c <= high * (1 + 1e-9))]
    if outside:
        raise MTLError(f"grid values {outside} lie outside the limits {limits}; widen the limits or drop them.")
    return values


def _step(c: float, factor: float) -> float:
    return float(f"{c * factor:.6g}")  # 0.01 / 10 is 0.001, not 0.0009999999999999998


def logistic_scorer(train_x, train_y, valid_x, valid_y, max_iter: int = MAX_ITER, seed: int = 0):
    """`fit_and_score` for `sweep_c`: a LogisticRegression (L2, lbfgs) at C fitted on the training
    features, and its accuracy on the validation features. The fit runs its BLAS and OpenMP on one
    thread: its matrices are small, and threads only wait on each other (a probe's fit took 10 to 25
    times longer with two threads on a busy 2-core machine)."""

    def fit_and_score(c: float) -> tuple[float, LogisticRegression]:
        with threadpool_limits(limits=1):
            model = LogisticRegression(C=c, max_iter=max_iter, random_state=seed).fit(train_x, train_y)
        return float((model.predict(valid_x) == valid_y).mean()), model

    return fit_and_score


def sweep_c(
    fit_and_score: Callable[[float], tuple[float, object]],
    grid: Sequence[float] = C_GRID,
    limits: tuple[float, float] = C_LIMITS,
) -> CSweep:
    """Run `fit_and_score(C) -> (validation score, fitted model)` at every C of `grid`, extend the grid
    past the edge holding the best score (module docstring), and keep the chosen C's model."""
    low_limit, high_limit = limits
    values = check_grid(grid, limits)
    scores: dict[float, float] = {}
    converged: dict[float, bool] = {}
    best: tuple[float, float, object] | None = None  # (score, C, model)

    def run(c: float) -> None:
        nonlocal best
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            score, model = fit_and_score(c)
        scores[c] = float(score)
        converged[c] = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        if best is None or (scores[c], -c) > (best[0], -best[1]):
            best = (scores[c], c, model)

    for c in values:
        run(c)
    while True:
        chosen = best[1]
        smallest, largest = min(scores), max(scores)
        if chosen == smallest and _step(smallest, 1 / EXTEND_FACTOR) >= low_limit * (1 - 1e-9):
            run(_step(smallest, 1 / EXTEND_FACTOR))
        elif chosen == largest and _step(largest, EXTEND_FACTOR) <= high_limit * (1 + 1e-9):
            run(_step(largest, EXTEND_FACTOR))
        else:
            break
    if smallest < chosen < largest:
        edge = "interior"
    else:
        edge = f"edge: {'low' if chosen == smallest else 'high'}, could not extend"
    tried = sorted(scores)
    table = pd.DataFrame(
        {
            "validation accuracy": [scores[c] for c in tried],
            "converged": [converged[c] for c in tried],
            "extended": [c not in values for c in tried],
        },
        index=pd.Index(tried, name="C"),
    )
    return CSweep(table, chosen, edge, best[2])


__all__ = ["C_GRID", "C_LIMITS", "CSweep", "check_grid", "logistic_scorer", "sweep_c"]
