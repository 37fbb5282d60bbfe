"""Where a task's rows come from: local JSON Lines (the data_dir argument, MTL_DATA_DIR, or a
shared/data folder beside the repository) or the pinned parquet files on the Hugging Face hub, read
and checked row by row (a bad row is named by file and line, with the fix)."""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

from .errors import DataError
from .tasks import TaskSpec

HUB_ROOT = "hf://datasets/"
HUB_MIRROR_ENV = "MTL_HUB_MIRROR"  # a folder in the hub's layout that stands in for HUB_ROOT


def _candidate_roots() -> list[Path]:
    here = Path.cwd().resolve()
    package_root = Path(__file__).resolve().parent.parent
    bases = [here, *here.parents][:5] + [package_root, *package_root.parents][:3]
    return [b / "shared" / "data" for b in dict.fromkeys(bases)]


def find_data_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """The local data folder and how it was found: argument, MTL_DATA_DIR, or a shared/data beside the repo.

    A set MTL_HUB_MIRROR asks for the hub's files explicitly, so no shared/data folder is searched then.
    """
    if data_dir is not None:
        path, how = Path(data_dir), "the data_dir argument"
    elif os.environ.get("MTL_DATA_DIR"):
        path, how = Path(os.environ["MTL_DATA_DIR"]), "MTL_DATA_DIR"
    elif os.environ.get(HUB_MIRROR_ENV):
        return None, f"{HUB_MIRROR_ENV} (set, so no shared/data folder was searched)"
    else:
        found = next((p for p in _candidate_roots() if p.is_dir()), None)
        return found, "a shared/data folder beside the repository"
    if not path.is_dir():
        raise DataError(
            f"The data folder given by {how} does not exist: {path}. Point it at a folder that holds "
            "<task>/<split>.jsonl, or unset it to use the Hugging Face hub."
        )
    return path, how


def _recopy_hint(path: Path) -> str:
    return (
        f"Re-copy the {path.parent.name} folder "
        "(python scripts/fetch_data.py DIR writes one wherever the hub is reachable)."
    )


def _read_utf8(path: Path) -> str:
    """A data file's text; bytes that are not UTF-8 (a file saved in another encoding, or cut short in
    the middle of a character) are reported with the file, the line and the fix."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path.parent.name}/{path.name} line {line} is not UTF-8 text "
            f"({err.reason} at byte {err.start}). {_recopy_hint(path)}"
        ) from err


def _numbered_rows(path: Path) -> tuple[list[int], list[dict]]:
    """The rows of a JSON Lines file and their line numbers; a bad line is reported with file and line."""
    where = f"{path.parent.name}/{path.name}"
    lines = _read_utf8(path).split("\n")
    numbers = [n for n, line in enumerate(lines, start=1) if line.strip()]
    try:  # one parse of the whole file is several times faster than one per line
        rows = json.loads("[" + ",".join(lines[n - 1] for n in numbers) + "]")
        if len(rows) == len(numbers) and all(type(row) is dict for row in rows):
            return numbers, rows
    except json.JSONDecodeError:
        pass
    for number in numbers:  # find the first bad line
        try:
            row = json.loads(lines[number - 1])
        except json.JSONDecodeError as err:
            raise DataError(
                f"{where} line {number}: malformed JSON ({err.msg}). Repair that line or re-copy the file."
            ) from err
        if not isinstance(row, dict):
            raise DataError(
                f"{where} line {number}: expected a JSON object, got {type(row).__name__}. Repair that line or re-copy "
                "the file."
            )
    raise DataError(f"{where}: could not be read as JSON Lines, one object per line. Re-copy the file.")


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines file; a malformed line is reported with its file and line number."""
    return _numbered_rows(Path(path))[1]


def _local_label_names(folder: Path, spec: TaskSpec) -> list[str]:
    path, where = folder / "features.json", f"{folder.name}/features.json"
    example = json.dumps({spec.label_field: list(spec.label_names)})
    if not path.exists():
        raise DataError(
            f"{where} is missing in {folder}; it lists the label names of {spec.name} in id order. Re-copy it, or "
            f"write {example}."
        )
    try:
        features = json.loads(_read_utf8(path))
    except json.JSONDecodeError as err:
        raise DataError(
            f"{where} is not valid JSON ({err.msg}, line {err.lineno} column {err.colno}). Repair it or re-copy it."
        ) from err
    names = features.get(spec.label_field) if isinstance(features, dict) else None
    if names is None:
        found = ", ".join(map(repr, features)) if isinstance(features, dict) else type(features).__name__
        raise DataError(
            f"{where} has no {spec.label_field!r} field (found: {found or 'nothing'}); it must list {spec.name}'s "
            f"label names in id order. Add it: {example}."
        )
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(
            f"{where}: {spec.label_field!r} is {_short(names)} ({type(names).__name__}), "
            f"not a list of label names in id order such as {example}. {_recopy_hint(path)}"
        )
    if list(names) != list(spec.label_names):
        raise DataError(
            f"{where} lists {spec.label_field} names {names}, but the registry (and the hub) name the ids "
            f"{list(spec.label_names)}; ids would mean different classes. Re-copy the data folder."
        )
    return list(names)


def _text_problem(spec: TaskSpec, text: object) -> str | None:
    if spec.level == "token":
        if not isinstance(text, list) or not text or not all(isinstance(t, str) for t in text):
            return f"{spec.text_field} {_short(text)} is not a non-empty list of strings (the sentence's tokens)"
    elif not isinstance(text, str) or not text.strip():
        return f"{spec.text_field} {_short(text)} is not a non-empty string"
    return None


def _label_problem(value: object, names: Sequence[str]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = (
            f"; the name {value!r} has id {list(names).index(value)}"
            if isinstance(value, str) and value in names
            else ""
        )
        return f"label {value!r} is not an integer class id (it is a {type(value).__name__}{hint})"
    if not 0 <= value < len(names):
        return f"label {value} is outside the {len(names)} classes (ids 0..{len(names) - 1})"
    return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clean_row(spec: TaskSpec, row: dict, where: str) -> dict:
    """The row as {'text', 'label'}, or an error that names the source row, the problem and the fix."""
    try:
        text, label = row[spec.text_field], row[spec.label_field]
    except KeyError as err:
        raise DataError(
            f"{where}: field {err.args[0]!r} is missing; {spec.name} rows need {spec.text_field!r} and "
            f"{spec.label_field!r}. Repair that row or re-copy the file."
        ) from None
    problem = _text_problem(spec, text)
    if problem is None:
        labels = label if spec.level == "token" else [label]
        if not isinstance(labels, list):
            problem = f"{spec.label_field} {_short(label)} is not a list of tag ids"
        elif spec.level == "token" and len(labels) != len(text):
            problem = f"{len(text)} tokens but {len(labels)} tags"
        else:
            problem = next(filter(None, (_label_problem(x, spec.label_names) for x in labels)), None)
    if problem is not None:
        ids = ", ".join(f"{i}={n}" for i, n in enumerate(spec.label_names[:13]))
        raise DataError(
            f"{where}: {problem}. Each {spec.name} row needs {spec.text_field!r} and {spec.label_field!r} with ids "
            f"{ids}; correct that row or re-copy the file."
        )
    return (
        {"text": list(text), "label": [int(x) for x in label]}
        if spec.level == "token"
        else {"text": text, "label": int(label)}
    )


def _clean_rows(spec: TaskSpec, rows: list[dict], where: Callable[[int], str]) -> list[dict]:
    """Every row checked before any splitting, so that an error names the source file and line."""
    n, text_field, label_field, token = len(spec.label_names), spec.text_field, spec.label_field, spec.level == "token"
    out = []
    for k, row in enumerate(rows):
        text, label = row.get(text_field), row.get(label_field)
        if token:  # the common, valid case without building a message; anything else takes the slow path
            ok = (
                type(text) is list
                and type(label) is list
                and 0 < len(text) == len(label)
                and all(type(t) is str for t in text)
                and all(type(x) is int and 0 <= x < n for x in label)
            )
        else:
            ok = type(text) is str and type(label) is int and 0 <= label < n and not text.isspace() and text != ""
        out.append({"text": text, "label": label} if ok else _clean_row(spec, row, where(k)))
    return out


def source_files(folder: Path, spec: TaskSpec) -> dict[str, Path]:
    paths = {source: folder / f"{source}.jsonl" for source in dict.fromkeys(s for s in spec.files.values() if s)}
    for path in paths.values():
        if not path.exists():
            raise DataError(
                f"{spec.name}: split file {path.name} is missing in {folder}. Re-copy the folder (python "
                "scripts/fetch_data.py writes one)."
            )
    return paths


def load_local(folder: Path, spec: TaskSpec) -> dict[str, list[dict]]:
    _local_label_names(folder, spec)
    raw = {}
    for source, path in source_files(folder, spec).items():
        numbers, rows = _numbered_rows(path)
        where = f"{folder.name}/{path.name}"
        raw[source] = _clean_rows(spec, rows, lambda k, where=where, numbers=numbers: f"{where} line {numbers[k]}")
    return raw


def hub_urls(spec: TaskSpec) -> dict[str, str]:
    """The pinned parquet file of each source split: on the hub, or under the MTL_HUB_MIRROR folder."""
    mirror = os.environ.get(HUB_MIRROR_ENV)
    root = Path(mirror).as_posix().rstrip("/") + "/" if mirror else HUB_ROOT
    revision = quote(spec.hub_revision, safe="")  # a branch name such as refs/convert/parquet needs escaping
    return {source: f"{root}{spec.hub_id}@{revision}/{path}" for source, path in spec.hub_files.items()}


def hub_dataset(spec: TaskSpec):
    """The task's source splits as a `datasets.DatasetDict`, read from the pinned parquet files (no loading script)."""
    from datasets import load_dataset

    mirror = os.environ.get(HUB_MIRROR_ENV)
    if mirror and not Path(mirror).is_dir():
        raise DataError(
            f"{HUB_MIRROR_ENV} names a folder that does not exist: {mirror}. Point it at a folder in the hub's layout "
            "(<repo>@<revision>/<file>.parquet), or unset it."
        )
    return load_dataset("parquet", data_files=hub_urls(spec))


def hub_label_names(spec: TaskSpec, features) -> list[str] | None:
    """ClassLabel names that the parquet files carry for the label field, if any."""
    feature = features.get(spec.label_field)
    feature = getattr(feature, "feature", feature)  # a sequence of tags
    names = getattr(feature, "names", None)
    return list(names) if names else None


def load_hub(spec: TaskSpec, dataset) -> dict[str, list[dict]]:
    raw = {}
    for source in dict.fromkeys(s for s in spec.files.values() if s):
        split = dataset[source]
        where = f"hub {spec.hub_id}@{spec.hub_revision[:7]} {source}"
        missing = [f for f in (spec.text_field, spec.label_field) if f not in split.column_names]
        if missing:
            raise DataError(
                f"{where}: column {missing[0]!r} is missing (columns: {', '.join(split.column_names)}). The pinned "
                f"files do not fit the registry: fix hub_files or hub_revision in TASKS[{spec.name!r}]."
            )
        names = hub_label_names(spec, split.features)
        if names is not None and names != list(spec.label_names):
            raise DataError(
                f"{where}: the files name the {spec.label_field} ids {names}, the registry {list(spec.label_names)}. "
                f"Fix label_names in TASKS[{spec.name!r}]."
            )
        rows = split.select_columns([spec.text_field, spec.label_field]).to_list()
        raw[source] = _clean_rows(spec, rows, lambda k, where=where: f"{where} row {k}")
    return raw
