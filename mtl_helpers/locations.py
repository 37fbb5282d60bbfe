"""Where things live: the book's repository root, the results folder per profile, and paths as a
reader's message shows them (relative to the book: stored outputs carry no machine paths)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import MTLError

SCENARIO_NAME = re.compile(r"^[a-z0-9][a-z0-9._+=-]{0,95}$")


def check_folder_name(kind: str, name: object) -> str:
    """`name` if it is a safe folder name (scenarios and profiles become folders under the results folder)."""
    if not isinstance(name, str) or not SCENARIO_NAME.match(name):
        raise MTLError(
            f"{kind} name {name!r} is not allowed: use lower-case letters, digits and . _ + = - "
            "(it becomes a folder name under the results folder, so no slashes or '..')."
        )
    return name


def book_root(start: Path | None = None) -> Path | None:
    """The repository root (the folder holding _toc.yml), searched upward from `start` or the cwd."""
    here = (start or Path.cwd()).resolve()
    return next((p for p in [here, *here.parents] if (p / "_toc.yml").exists()), None)


def shown_path(path: Path) -> str:
    """A path as a reader's message shows it: relative to the book's root when inside it (stored
    outputs carry no machine paths), else as given."""
    root = book_root()
    try:
        return str(Path(path).resolve().relative_to(root.resolve())) if root is not None else str(path)
    except ValueError:
        return str(path)


def results_root() -> Path:
    """MTL_RESULTS_DIR if set, else results/ at the repository root (or the cwd); one folder per profile inside."""
    if os.environ.get("MTL_RESULTS_DIR"):
        return Path(os.environ["MTL_RESULTS_DIR"])
    return (book_root() or Path.cwd()) / "results"


def results_dir(profile: str) -> Path:
    return results_root() / check_folder_name("Profile", profile)


def is_book_results(root: Path) -> bool:
    """Whether `root` is the results folder committed with the book (results/ at the repository root)."""
    book = book_root()
    return book is not None and Path(root).resolve() == (book / "results").resolve()
