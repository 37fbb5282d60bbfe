"""Sweeps that do not stop at their edges: a log grid per knob, several seeds per point, chosen on
validation, and, when the best point lies on an edge of a knob's grid, more points beyond that edge
until the best point is inside the grid (or a stated limit is reached, which the sweep then reports).

A `Sweep` remembers what chose its point: the split and the exact examples (their digests). The
verdict helper (`mtl_helpers.verdicts`) refuses to decide a verdict on them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from .errors import MTLError
from .records import RunRecord
from .runs import chosen_value, sweep_table

SELECTION_SPLIT = "validation"  # the split every sweep chooses on


@dataclass(frozen=True)
class Axis:
    """One swept knob: its starting grid (ascending), the factor between neighbouring points (used to
    extend the grid past an edge) and the limits beyond which it is never extended."""

    name: str
    values: tuple[float, ...]
    low: float = 0.0
    high: float = math.inf

    def __post_init__(self) -> None:
        values = tuple(self.values)
        if not values or any(not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in values):
            raise MTLError(f"Axis {self.name!r} needs positive numbers, got {self.values!r}.")
        if list(values) != sorted(set(values)):
            raise MTLError(f"Axis {self.name!r}: give its values ascending and without repeats, got {values!r}.")
        if not (self.low <= values[0] and values[-1] <= self.high):
            raise MTLError(
                f"Axis {self.name!r}: its values {values!r} lie outside its limits [{self.low}, {self.high}]."
            )
        object.__setattr__(self, "values", values)

    @property
    def ratio(self) -> float:
        """The grid's step as a factor (the geometric mean of the neighbouring ratios); 10 for one point."""
        if len(self.values) < 2:
            return 10.0
        return (self.values[-1] / self.values[0]) ** (1 / (len(self.values) - 1))

    def beyond(self, value: float, side: str) -> float | None:
        """The next point past `value` on `side` ("low" or "high"), or None when it would pass a limit.

        A grid on the 1-3 sequence (1e-4, 3e-4, 1e-3, ...) continues on it; whole numbers stay whole;
        any other grid steps by its ratio, rounded to two significant digits."""
        if _on_one_three(self.values):
            exponent = math.floor(math.log10(value) + 1e-9)
            mantissa = round(value / 10**exponent)
            if side == "high":
                nxt = (3 if mantissa == 1 else 10) * 10.0**exponent
            else:
                nxt = (1 if mantissa == 3 else 0.3) * 10.0**exponent
            nxt = float(f"{nxt:.1g}")
        elif all(isinstance(v, int) for v in self.values):
            nxt = max(1, round(value * self.ratio if side == "high" else value / self.ratio))
        else:
            nxt = float(f"{(value * self.ratio if side == 'high' else value / self.ratio):.2g}")
        if nxt < self.low or nxt > self.high or nxt == value:
            return None
        return nxt


def _on_one_three(values: Sequence[float]) -> bool:
    """True when every value is 1 or 3 times a power of ten (the usual log grid of learning rates)."""
    if len(values) < 2 or any(isinstance(v, int) for v in values):
        return False
    for v in values:
        exponent = math.floor(math.log10(v) + 1e-9)
        if round(v / 10**exponent, 9) not in (1.0, 3.0):
            return False
    return True


@dataclass
class Sweep:
    """What a sweep ran and chose. `edges` maps each knob to where its chosen value lies: "interior", or
    a sentence naming the edge and why the grid could not go further; `selection` maps each task to
    the digest of the validation examples that chose the point."""

    prefix: str
    axes: tuple[Axis, ...]
    table: pd.DataFrame
    chosen: object
    arms: dict[object, list[RunRecord]]
    edges: dict[str, str]
    seeds: list[int]
    selected_on: str = SELECTION_SPLIT
    selection: dict[str, str] = field(default_factory=dict)

    @property
    def interior(self) -> bool:
        """True when no swept knob's chosen value lies on an edge of its (extended) grid."""
        return all(status == "interior" or status.startswith("fixed") for status in self.edges.values())

    def edge_note(self) -> str:
        """One sentence for the page: where the chosen point lies on every knob's grid."""
        parts = [f"{name}: {status}" for name, status in self.edges.items()]
        points = len(self.arms)
        return f"{points} points, {len(self.seeds)} seed(s) each, chosen on {self.selected_on}; " + "; ".join(parts)


def _as_point(values: tuple) -> object:
    return values if len(values) > 1 else values[0]


def _coordinates(point: object, n_axes: int) -> tuple:
    return point if n_axes > 1 else (point,)


def _selection_digests(arms: Mapping[object, Sequence[RunRecord]], split: str) -> dict[str, str]:
    """The digest of the examples every point was chosen on, per task; every point must share them."""
    digests: dict[str, str] = {}
    for point, records in arms.items():
        for record in records:
            for task, digest in record.examples.get(split, {}).items():
                if digests.setdefault(task, digest) != digest:
                    raise MTLError(
                        f"Sweep point {point!r} (seed {record.seed}) was scored on other {task!r} {split} rows than "
                        "the other points: a sweep compares its points on the same examples. Re-run it."
                    )
    return digests


def run_sweep(
    prefix: str,
    axes: Sequence[Axis],
    make_recipe: Callable[..., object],
    run_point: Callable[[str, object], list[RunRecord]],
    extensions: int = 2,
) -> Sweep:
    """Run the grid of `axes` (the product of their values), choose on validation, and extend past an edge.

    `make_recipe(*values)` builds the recipe of a point and `run_point(name, recipe)` trains it over the
    sweep's seeds, returning its records scored on validation. When the chosen value of a knob is the
    lowest or highest of its grid, the next point past that edge (one grid step) is run at the chosen
    values of the other knobs, up to `extensions` times per knob and side; a limit or the end of the
    extensions is stated in `edges`.
    """
    axes = tuple(axes)
    if not axes:
        raise MTLError("run_sweep needs at least one Axis.")
    if isinstance(extensions, bool) or not isinstance(extensions, int) or extensions < 0:
        raise MTLError(f"run_sweep(extensions={extensions!r}): give a whole number >= 0.")
    values = {axis.name: list(axis.values) for axis in axes}
    arms: dict[object, list[RunRecord]] = {}
    used = {(axis.name, side): 0 for axis in axes for side in ("low", "high")}
    stopped: dict[str, str] = {}

    def run(points) -> None:
        for coordinates in points:
            point = _as_point(tuple(coordinates))
            if point not in arms:
                name = f"{prefix}-" + "-".join(f"{v:g}" if isinstance(v, float) else str(v) for v in coordinates)
                arms[point] = run_point(name, make_recipe(*coordinates))

    run(itertools.product(*(axis.values for axis in axes)))
    while True:
        table = sweep_table(arms)
        chosen = _coordinates(chosen_value(table), len(axes))
        extended = False
        for i, axis in enumerate(axes):
            grid = sorted(values[axis.name])
            if len(grid) == 1:  # one value: a fixed knob, not swept
                stopped[axis.name] = f"fixed at {grid[0]:g}"
                continue
            side = "low" if chosen[i] == grid[0] else "high" if chosen[i] == grid[-1] else None
            if side is None:
                stopped.pop(axis.name, None)
                continue
            nxt = axis.beyond(chosen[i], side)
            if nxt is None:
                stopped[axis.name] = f"at the {side}est value {chosen[i]:g}, the limit of this knob"
                continue
            if used[(axis.name, side)] >= extensions:
                stopped[axis.name] = (
                    f"at the {side}est value {chosen[i]:g} after {extensions} extension(s) past the first grid"
                )
                continue
            used[(axis.name, side)] += 1
            values[axis.name].append(nxt)
            run([tuple(nxt if j == i else chosen[j] for j in range(len(axes)))])
            extended = True
            break  # re-choose with the new point before extending any other knob
        if not extended:
            break
    edges = {axis.name: stopped.get(axis.name, "interior") for axis in axes}
    seeds = sorted({r.seed for records in arms.values() for r in records})
    return Sweep(
        prefix=prefix,
        axes=axes,
        table=table.sort_index(),  # extensions were appended: in grid order for reading and plotting
        chosen=_as_point(chosen),
        arms=arms,
        edges=edges,
        seeds=seeds,
        selection=_selection_digests(arms, SELECTION_SPLIT),
    )
