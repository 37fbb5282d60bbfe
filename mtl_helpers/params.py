"""Checks of the notebooks' parameters, so that a wrong value fails in the chapter's first cell.

A chapter calls these right after its parameter cell, naming there every constraint that it relies
on later (a chapter that caches sentence features asks for sentence-level tasks), instead of failing
many cells later with an error about a setting the reader cannot change. Every error names the
parameter, what it got, and what is allowed.

papermill's `-p name value` passes a list as its text ("[0, 1]"); every list parameter accepts that
text and reads it as a Python literal.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence

from .tasks import TASKS
from .errors import MTLError

LEVELS = ("sentence", "token")


class ParameterError(MTLError, ValueError):
    """A notebook parameter has a value the chapter cannot use."""


def parse_list(name: str, value: object) -> object:
    """`value`, or the Python literal it spells when it is text such as "[0, 1]" (papermill -p)."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        raise ParameterError(
            f"{name}={value!r}: expected a list such as [0, 1], written as Python or JSON, but this text is not one."
        ) from None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bounds(above: float | None, at_least: float | None, below: float | None, at_most: float | None) -> str:
    parts = [
        f"{word} {limit:g}"
        for word, limit in (("above", above), ("at least", at_least), ("below", below), ("at most", at_most))
        if limit is not None
    ]
    return " and ".join(parts)


def _fits(
    value: float, above: float | None, at_least: float | None, below: float | None, at_most: float | None
) -> bool:
    return (
        (above is None or value > above)
        and (at_least is None or value >= at_least)
        and (below is None or value < below)
        and (at_most is None or value <= at_most)
    )


def check_number(
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    integer: bool = False,
    because: str = "",
) -> float | int:
    """`value` when it is a finite number (a whole one if `integer`) within the given bounds.

    `because`: why the chapter needs the bounds, said in the error.
    """
    kind = "a whole number" if integer else "a finite number"
    limits = _bounds(above, at_least, below, at_most)
    fits = (
        _is_number(value) and (not integer or isinstance(value, int)) and _fits(value, above, at_least, below, at_most)
    )
    if not fits:
        reason = f" ({because})" if because else ""
        raise ParameterError(f"{name}={value!r}: expected {kind}{' ' + limits if limits else ''}{reason}.")
    return value


def check_rate(name: str, value: object) -> float:
    """A learning rate: a number between 0 and 1 (both excluded)."""
    return check_number(name, value, above=0, below=1, because="a learning rate")


def check_numbers(
    name: str,
    values: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    integer: bool = False,
    min_length: int = 1,
    distinct: bool = False,
    including: float | None = None,
    because: str = "",
    alternative: str = "",
) -> list:
    """`values` as a list of at least `min_length` numbers, each within the bounds (see `check_number`).

    `distinct`: no value twice; `including`: a value the list must hold (a reference the chapter compares
    with); `because`: why, said in the error; `alternative`: another accepted value, named in the error.
    """
    values = parse_list(name, values)
    length = "a non-empty list of" if min_length <= 1 else f"a list of at least {min_length}"
    kind = "whole numbers" if integer else "finite numbers"
    limits = _bounds(above, at_least, below, at_most)
    wanted = (
        f"{alternative + ' or ' if alternative else ''}{length} {'different ' if distinct else ''}{kind}"
        f"{' ' + limits if limits else ''}{f', including {including:g}' if including is not None else ''}"
        f"{f' ({because})' if because else ''}"
    )
    fits = (
        isinstance(values, (list, tuple))
        and len(values) >= max(min_length, 1)
        and all(
            _is_number(v) and (not integer or isinstance(v, int)) and _fits(v, above, at_least, below, at_most)
            for v in values
        )
        and (not distinct or len(set(values)) == len(values))
        and (including is None or including in values)
    )
    if not fits:
        raise ParameterError(f"{name}={values!r}: expected {wanted}.")
    return list(values)


def check_rates(name: str, values: object) -> list[float]:
    """A non-empty list of learning rates, each between 0 and 1 (both excluded)."""
    return check_numbers(name, values, above=0, below=1, because="learning rates")


def check_sizes(name: str, values: object, default: Sequence[int]) -> list[int]:
    """Numbers of training rows, smallest first: `default` (the profile's) when `values` is None."""
    if values is None:
        return sorted(default)
    return sorted(
        check_numbers(
            name,
            values,
            at_least=1,
            integer=True,
            distinct=True,
            because="rows of training data",
            alternative=f"None (the profile's sizes, {list(default)})",
        )
    )


def _tasks_of(level: str | None, label_descriptions: bool) -> list[str]:
    return sorted(
        name
        for name, spec in TASKS.items()
        if (level is None or spec.level == level) and (spec.label_descriptions or not label_descriptions)
    )


def check_task(
    name: str, value: object, level: str | None = None, *, label_descriptions: bool = False, because: str = ""
) -> str:
    """`value` when it names a task of the registry at `level` ("sentence", "token"; None: either).

    `label_descriptions`: the task must have descriptions of its labels (zero-shot classification).
    `because`: why the chapter needs this, said in the error.
    """
    if level is not None and level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS} or None, got {level!r}.")  # the chapter's own mistake
    allowed = _tasks_of(level, label_descriptions)
    if value in allowed:
        return value
    what = " ".join(
        filter(
            None,
            [f"a {level}-level" if level else "a", "task", "with label descriptions" if label_descriptions else ""],
        )
    )
    if value in TASKS:
        spec = TASKS[value]
        problem = f"a {spec.level}-level task" + (" without label descriptions" if level in (None, spec.level) else "")
    else:
        problem = "not a task of the registry"
    reason = f" ({because})" if because else ""
    raise ParameterError(
        f"{name}={value!r} is {problem}; this chapter needs {what}{reason}: choose one of {', '.join(allowed)}."
    )


def check_task_pair(
    task_a: object,
    task_b: object,
    level: str | None | tuple[str | None, str | None] = "sentence",
    *,
    names: tuple[str, str] = ("task_a", "task_b"),
    label_descriptions: bool = False,
    because: str = "",
) -> tuple[str, str]:
    """Two different tasks of the registry, each at its level (one level for both, or a pair; None: either)."""
    level_a, level_b = level if isinstance(level, tuple) else (level, level)
    check_task(names[0], task_a, level_a, label_descriptions=label_descriptions, because=because)
    check_task(names[1], task_b, level_b, label_descriptions=label_descriptions, because=because)
    if task_a == task_b:
        raise ParameterError(
            f"{names[0]} and {names[1]} must be two different tasks, both are {task_a!r}: change one of them."
        )
    return task_a, task_b
