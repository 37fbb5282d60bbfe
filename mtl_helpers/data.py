"""Task registry, loading (local JSON Lines or the Hugging Face hub), fixed splits, tokenization,
dynamic padding and the multi-task batch schedule. The registry is the one place that knows
dataset names, hub ids, fields and label names."""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, PreTrainedTokenizerBase

from .errors import DataError, UnknownTaskError

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0  # fixes held-out splits and subsets once, independent of the training seed
PARQUET_REVISION = "refs/convert/parquet"  # the hub's conversion of datasets that had a loading script


@dataclass(frozen=True)
class TaskSpec:
    """Where a dataset lives and how its rows map to (text, label)."""

    name: str
    level: str  # "sentence" or "token"
    text_field: str
    label_field: str
    hub_id: str
    hub_config: str | None
    files: dict[str, str | None]  # our split -> source split; None: held out from train
    holdout: int = 0
    label_descriptions: tuple[str, ...] = ()  # for zero-shot classification by similarity
    description: str = ""


TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        "sst2", "sentence", "sentence", "label", "nyu-mll/glue", "sst2",
        {"train": "train", "validation": None, "test": "validation"}, holdout=872,
        label_descriptions=("a negative movie review: the film is bad", "a positive movie review: the film is good"),
        description="GLUE SST-2 movie-review sentiment (GLUE's labelled validation set serves as test)",
    ),
    "rotten_tomatoes": TaskSpec(
        "rotten_tomatoes", "sentence", "text", "label", "cornell-movie-review-data/rotten_tomatoes", None,
        {"train": "train", "validation": "validation", "test": "test"},
        label_descriptions=("a negative movie review: the film is bad", "a positive movie review: the film is good"),
        description="Pang & Lee sentence polarity (Rotten Tomatoes snippets)",
    ),
    "trec": TaskSpec(
        "trec", "sentence", "text", "coarse_label", "CogComp/trec", None,
        {"train": "train", "validation": None, "test": "test"}, holdout=500,
        label_descriptions=(
            "a question asking what an abbreviation stands for",
            "a question about a thing, such as an animal, a colour, a food, a product or a sport",
            "a question asking for a definition, a description, a manner or a reason",
            "a question about a person or a group of people",
            "a question about a place, such as a city, a country or a mountain",
            "a question asking for a number, a date, a count, a distance or an amount of money",
        ),
        description="TREC question classification, 6 coarse classes",
    ),
    "conll2003": TaskSpec(
        "conll2003", "token", "tokens", "ner_tags", "eriktks/conll2003", None,
        {"train": "train", "validation": "validation", "test": "test"},
        description="CoNLL-2003 English named-entity recognition (IOB2)",
    ),
    "wnut_17": TaskSpec(
        "wnut_17", "token", "tokens", "ner_tags", "leondz/wnut_17", None,
        {"train": "train", "validation": "validation", "test": "test"},
        description="WNUT-17 emerging and rare entities (IOB2)",
    ),
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UnknownTaskError(f"Unknown task {name!r}. Known tasks: {', '.join(sorted(TASKS))}.")
    return TASKS[name]


@dataclass
class TaskData:
    """A task's rows per split, each row {'text': str | list[str], 'label': int | list[int]}."""

    name: str
    level: str
    label_names: list[str]
    splits: dict[str, list[dict]]
    source: str
    spec: TaskSpec = field(repr=False)

    def sizes(self) -> dict[str, int]:
        return {s: len(rows) for s, rows in self.splits.items()}

    def label_counts(self, split: str = "train") -> dict[str, int]:
        counts: Counter = Counter()
        for row in self.splits[split]:
            labels = row["label"] if isinstance(row["label"], list) else [row["label"]]
            counts.update(self.label_names[i] for i in labels)
        return {name: counts[name] for name in self.label_names}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={n}" for s, n in self.sizes().items())
        return f"TaskData({self.name!r}, {self.level}, {len(self.label_names)} labels, {sizes}, from {self.source})"


# ---------------------------------------------------------------- locating and reading the data


def _candidate_roots() -> list[Path]:
    here = Path.cwd().resolve()
    package_root = Path(__file__).resolve().parent.parent
    bases = [here, *here.parents][:5] + [package_root, *package_root.parents][:3]
    return [b / "shared" / "data" for b in dict.fromkeys(bases)]


def find_data_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """The local data folder and how it was found: argument, MTL_DATA_DIR, or a shared/data beside the repo."""
    if data_dir is not None:
        path, how = Path(data_dir), "the data_dir argument"
    elif os.environ.get("MTL_DATA_DIR"):
        path, how = Path(os.environ["MTL_DATA_DIR"]), "MTL_DATA_DIR"
    else:
        found = next((p for p in _candidate_roots() if p.is_dir()), None)
        return found, "a shared/data folder beside the repository"
    if not path.is_dir():
        raise DataError(f"The data folder given by {how} does not exist: {path}. Point it at a folder that holds <task>/<split>.jsonl, or unset it to use the Hugging Face hub.")
    return path, how


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines file; a malformed line is reported with its file and line number."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path.name} line {number}: malformed JSON ({err.msg}). Repair that line or re-copy the file.") from err
            if not isinstance(row, dict):
                raise DataError(f"{path.name} line {number}: expected a JSON object, got {type(row).__name__}.")
            rows.append(row)
    return rows


def _label_names_local(folder: Path, spec: TaskSpec) -> list[str]:
    features = folder / "features.json"
    if not features.exists():
        raise DataError(f"{features} is missing; it lists the label names of {spec.name}.")
    return list(json.loads(features.read_text(encoding="utf-8"))[spec.label_field])


def _load_local(folder: Path, spec: TaskSpec) -> tuple[dict[str, list[dict]], list[str]]:
    raw = {}
    for source in {s for s in spec.files.values() if s}:
        path = folder / f"{source}.jsonl"
        if not path.exists():
            raise DataError(f"{spec.name}: split file {source}.jsonl is missing in {folder}.")
        raw[source] = [_row(spec, r, f"{path.name} line {i}") for i, r in enumerate(read_jsonl(path), start=1)]
    return raw, _label_names_local(folder, spec)


def _load_hub(spec: TaskSpec) -> tuple[dict[str, list[dict]], list[str]]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(spec.hub_id, spec.hub_config)
    except RuntimeError as err:  # "Dataset scripts are no longer supported"
        if "script" not in str(err).lower():
            raise
        dataset = load_dataset(spec.hub_id, revision=PARQUET_REVISION)
    feature = dataset["train"].features[spec.label_field]
    names = list(getattr(feature, "names", None) or feature.feature.names)
    raw = {
        source: [_row(spec, r, f"hub {spec.hub_id} {source} row {i}") for i, r in enumerate(dataset[source])]
        for source in {s for s in spec.files.values() if s}
    }
    return raw, names


def _row(spec: TaskSpec, row: dict, where: str) -> dict:
    try:
        return {"text": row[spec.text_field], "label": row[spec.label_field]}
    except KeyError as err:
        raise DataError(f"{where}: field {err.args[0]!r} is missing; {spec.name} rows need {spec.text_field!r} and {spec.label_field!r}.") from None


def _check_labels(task: str, rows: list[dict], n_labels: int, split: str) -> None:
    for i, row in enumerate(rows):
        labels = row["label"] if isinstance(row["label"], list) else [row["label"]]
        bad = [x for x in labels if not isinstance(x, int) or not 0 <= x < n_labels]
        if bad:
            raise DataError(f"{task} {split} row {i}: label {bad[0]!r} is outside the {n_labels} classes (ids 0..{n_labels - 1}).")
        if isinstance(row["label"], list) and len(row["label"]) != len(row["text"]):
            raise DataError(f"{task} {split} row {i}: {len(row['text'])} tokens but {len(row['label'])} tags.")


def _subset(rows: list[dict], n: int | None, what: str) -> list[dict]:
    if n is None:
        return rows
    if n < 1:
        raise DataError(f"{what}: a subset needs at least 1 row, got {n}.")
    if n > len(rows):
        raise DataError(f"{what}: asked for {n} rows but only {len(rows)} exist. Ask for at most {len(rows)}, or None for all.")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))[:n]
    return [rows[i] for i in sorted(order)]


def load_task(
    name: str,
    max_train: int | None = None,
    max_eval: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> TaskData:
    """Load a task by name with fixed train/validation/test splits and deterministic subsets.

    Looks in `data_dir`, then MTL_DATA_DIR, then a shared/data folder beside the repository,
    then the Hugging Face hub.
    """
    spec = task_spec(name)
    root, how = find_data_dir(data_dir)
    folder = root / name if root is not None else None
    if folder is not None and folder.is_dir():
        raw, label_names = _load_local(folder, spec)
        source = "local JSON Lines"
    else:
        try:
            raw, label_names = _load_hub(spec)
        except Exception as err:
            looked = f"{folder} (found through {how})" if folder is not None else "no local folder (none given by data_dir, MTL_DATA_DIR, or a shared/data beside the repository)"
            raise DataError(
                f"Could not load task {name!r}. Looked in {looked}, then the Hugging Face hub "
                f"({spec.hub_id}): {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
                f"Set MTL_DATA_DIR to a folder holding {name}/<split>.jsonl and {name}/features.json, or go online."
            ) from err
        source = f"the Hugging Face hub ({spec.hub_id})"
    splits: dict[str, list[dict]] = {}
    train = raw[spec.files["train"]]
    held_out = [s for s, src in spec.files.items() if src is None]
    if held_out:
        order = np.random.default_rng(SPLIT_SEED).permutation(len(train))
        holdout_ids = set(order[: spec.holdout].tolist())
        splits[held_out[0]] = [r for i, r in enumerate(train) if i in holdout_ids]
        train = [r for i, r in enumerate(train) if i not in holdout_ids]
    splits["train"] = train
    for split, src in spec.files.items():
        if src is not None and split != "train":
            splits[split] = raw[src]
    splits = {s: splits[s] for s in SPLITS}
    for split, rows in splits.items():
        if not rows:
            raise DataError(f"{name} {split} split is empty; check the data files.")
        _check_labels(name, rows, len(label_names), split)
    splits["train"] = _subset(splits["train"], max_train, f"{name} train (max_train)")
    for split in ("validation", "test"):
        splits[split] = _subset(splits[split], min(max_eval, len(splits[split])) if max_eval else None, f"{name} {split}")
    return TaskData(name, spec.level, label_names, splits, source, spec)
