"""Atomic result records (one JSON file per scenario) and collecting them for comparison."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd

RESULT_SCHEMA = 1


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def book_root(start: Path | None = None) -> Path | None:
    """The repository root (the folder holding _toc.yml), searched upward from `start` or the cwd."""
    here = (start or Path.cwd()).resolve()
    return next((p for p in [here, *here.parents] if (p / "_toc.yml").exists()), None)


def results_dir(profile: str) -> Path:
    """MTL_RESULTS_DIR if set, else results/<profile> at the repository root (or the cwd)."""
    if os.environ.get("MTL_RESULTS_DIR"):
        return Path(os.environ["MTL_RESULTS_DIR"]) / profile
    return (book_root() or Path.cwd()) / "results" / profile


def save_result(record: dict, profile: str, directory: str | os.PathLike | None = None) -> Path:
    """Write one scenario's record atomically as <dir>/<scenario>.json, replacing an older run."""
    if not record.get("scenario"):
        raise ValueError("A result record needs a 'scenario' name.")
    directory = Path(directory) if directory is not None else results_dir(profile)
    return write_json_atomic(directory / f"{record['scenario']}.json", {**record, "profile": profile, "schema": RESULT_SCHEMA})


def load_results(profile: str, directory: str | os.PathLike | None = None) -> list[dict]:
    """All records of one profile; records of another profile or schema are ignored, never mixed."""
    directory = Path(directory) if directory is not None else results_dir(profile)
    records = []
    for path in sorted(directory.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("profile") == profile and record.get("schema") == RESULT_SCHEMA:
            records.append(record)
    return records


def results_table(records: list[dict]) -> pd.DataFrame:
    """One row per scenario: cost columns and each task's validation metric."""
    rows = []
    for r in records:
        row = {
            "scenario": r["scenario"],
            "trainable params": r.get("trainable_params"),
            "train seconds": r.get("train_seconds"),
            "examples/s": r.get("examples_per_second"),
            "peak memory MB": r.get("peak_memory_mb"),
        }
        for task, metrics in r.get("metrics", {}).items():
            row[f"{task} {metrics.get('metric', '')}".strip()] = metrics.get("value")
        rows.append(row)
    return pd.DataFrame(rows).set_index("scenario") if rows else pd.DataFrame()


def glue(name: str, value, display: bool = False) -> None:
    """Store a value for the book's {glue} references (myst-nb); a no-op where myst-nb is missing."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # e.g. on Colab, where the book toolchain is not installed
        return
    myst_glue(name, value, display=display)


def accuracy_margin(accuracies: float | list[float], sizes: int | list[int], z: float = 2.0) -> float:
    """z binomial standard errors of an accuracy, or of the mean of independent accuracies.

    Differences smaller than this are within the noise of one run on that much validation data.
    """
    ps = [accuracies] if isinstance(accuracies, (int, float)) else list(accuracies)
    ns = [sizes] * len(ps) if isinstance(sizes, int) else list(sizes)
    if len(ps) != len(ns) or not ps or min(ns) < 1:
        raise ValueError("accuracy_margin needs one positive size per accuracy.")
    variance = sum(p * (1 - p) / n for p, n in zip(ps, ns)) / len(ps) ** 2
    return z * math.sqrt(variance)
