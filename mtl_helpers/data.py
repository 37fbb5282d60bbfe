"""Task registry, loading (local JSON Lines or pinned parquet files on the Hugging Face hub),
leak-free fixed splits, tokenization, dynamic padding and the multi-task batch schedule. The
registry is the one place that knows dataset names, hub ids and revisions, fields and label names."""
from __future__ import annotations

import copy
import json
import numbers
import os
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence
from urllib.parse import quote

import numpy as np

from .errors import DataError, UnknownTaskError

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0  # fixes held-out splits and subsets once, independent of the training seed
MIN_SHARED_WORDS = 3  # a training text this long may not occur inside a held-out text
HUB_ROOT = "hf://datasets/"
HUB_MIRROR_ENV = "MTL_HUB_MIRROR"  # a folder in the hub's layout that stands in for HUB_ROOT
SHARED_TEXT_RULE = (
    "no shared text: after lower-casing and normalising whitespace, no held-out text occurs (as whole "
    f"words) inside a training text, and no training text of {MIN_SHARED_WORDS}+ words occurs inside a held-out text"
)
DUPLICATE_RULE = f"no held-out sentence of {MIN_SHARED_WORDS}+ tokens also occurs in training (tokens joined with spaces, lower-cased)"


@dataclass(frozen=True)
class TaskSpec:
    """Where a dataset lives, how its rows map to (text, label), and how its splits are formed."""

    name: str
    level: str  # "sentence" or "token"
    text_field: str
    label_field: str
    label_names: tuple[str, ...]  # the hub's ClassLabel names in id order; parquet files may not carry them
    hub_id: str
    hub_revision: str  # a commit of the dataset repository, so the bytes cannot drift
    hub_files: dict[str, str]  # source split -> parquet file inside the repository at hub_revision
    files: dict[str, str | None]  # our split -> source split; None: held out from train
    holdout: int = 0  # rows held out from train when a split has no source
    holdout_min_words: int = MIN_SHARED_WORDS  # only texts this long may be held out
    holdout_unit: str = "training rows"  # what a held-out row is, for the split report
    label_descriptions: tuple[str, ...] = ()  # for zero-shot classification by similarity
    description: str = ""


_MOVIE_REVIEW = ("a negative movie review: the film is bad", "a positive movie review: the film is good")

# Revisions: commits of the parquet files (nyu-mll/glue is parquet-native; the others are commits of the
# hub's refs/convert/parquet branch, since their main branch holds a loading script that `datasets` refuses).
TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        name="sst2", level="sentence", text_field="sentence", label_field="label",
        label_names=("negative", "positive"),
        hub_id="nyu-mll/glue", hub_revision="bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c",
        hub_files={"train": "sst2/train-00000-of-00001.parquet", "validation": "sst2/validation-00000-of-00001.parquet"},
        files={"train": "train", "validation": None, "test": "validation"},
        # SST-2 train is phrases cut from parse trees: hold out whole sentences, like its test split
        holdout=872, holdout_min_words=10, holdout_unit="whole sentences",
        label_descriptions=_MOVIE_REVIEW,
        description="GLUE SST-2 movie-review sentiment (GLUE's labelled validation set serves as test)",
    ),
    "rotten_tomatoes": TaskSpec(
        name="rotten_tomatoes", level="sentence", text_field="text", label_field="label",
        label_names=("neg", "pos"),
        hub_id="cornell-movie-review-data/rotten_tomatoes", hub_revision="a2b32381b51e711ccca777c4b295adf3212c4a2f",
        hub_files={s: f"default/{s}/0000.parquet" for s in SPLITS},
        files={s: s for s in SPLITS},
        label_descriptions=_MOVIE_REVIEW,
        description="Pang & Lee sentence polarity (Rotten Tomatoes snippets)",
    ),
    "trec": TaskSpec(
        name="trec", level="sentence", text_field="text", label_field="coarse_label",
        label_names=("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
        hub_id="CogComp/trec", hub_revision="65752bf53af25bc935a0dce92fb5b6c930728450",
        hub_files={s: f"default/{s}/0000.parquet" for s in ("train", "test")},
        files={"train": "train", "validation": None, "test": "test"},
        holdout=500, holdout_unit="questions",
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
        name="conll2003", level="token", text_field="tokens", label_field="ner_tags",
        label_names=("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"),
        hub_id="eriktks/conll2003", hub_revision="ce85b39f9dd99f552d0739d456814e95fb6a39b0",
        hub_files={s: f"conll2003/{s}/0000.parquet" for s in SPLITS},
        files={s: s for s in SPLITS},
        description="CoNLL-2003 English named-entity recognition (IOB2)",
    ),
    "wnut_17": TaskSpec(
        name="wnut_17", level="token", text_field="tokens", label_field="ner_tags",
        label_names=(
            "O", "B-corporation", "I-corporation", "B-creative-work", "I-creative-work", "B-group", "I-group",
            "B-location", "I-location", "B-person", "I-person", "B-product", "I-product",
        ),
        hub_id="leondz/wnut_17", hub_revision="1ac0b6d18c8a1a1d1606b24bef78b8af2f92d2d9",
        hub_files={s: f"wnut_17/{s}/0000.parquet" for s in SPLITS},
        files={s: s for s in SPLITS},
        description="WNUT-17 emerging and rare entities (IOB2)",
    ),
}


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UnknownTaskError(f"Unknown task {name!r}. Known tasks: {', '.join(sorted(TASKS))}.")
    return TASKS[name]


@dataclass
class TaskData:
    """A task's rows per split, each row {'text': str | list[str], 'label': int | list[int]}.

    `split_report` says how the splits were formed from the source files, before any
    max_train/max_eval subset: see `_split_report`.
    """

    name: str
    level: str
    label_names: list[str]
    splits: dict[str, list[dict]]
    source: str
    spec: TaskSpec = field(repr=False)
    split_report: dict = field(default_factory=dict, repr=False)

    def sizes(self) -> dict[str, int]:
        return {s: len(rows) for s, rows in self.splits.items()}

    def label_counts(self, split: str = "train") -> dict[str, int]:
        counts: Counter = Counter()
        for row in self.splits[split]:
            labels = row["label"] if isinstance(row["label"], list) else [row["label"]]
            counts.update(self.label_names[i] for i in labels)
        return {name: counts[name] for name in self.label_names}

    def describe(self) -> str:
        """How the splits were formed, in a sentence or two."""
        return self.split_report.get("describe", "")

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={n}" for s, n in self.sizes().items())
        return f"TaskData({self.name!r}, {self.level}, {len(self.label_names)} labels, {sizes}, from {self.source})"


# ---------------------------------------------------------------- shared text between splits


def normalize_text(text: str | Sequence[str]) -> str:
    """Lower-cased text with single spaces; a token list is joined with spaces first."""
    if not isinstance(text, str):
        text = " ".join(text)
    return " ".join(text.lower().split())


class _Texts:
    """Normalised texts as word lists, with their 3-word windows computed once per split."""

    def __init__(self, texts: Iterable[str | Sequence[str]] = (), words: list[list[str]] | None = None):
        if words is None:
            words = [(t if isinstance(t, str) else " ".join(t)).lower().split() for t in texts]
        self.words = words
        self._windows: list[list[str]] | None = None
        self._padded: list[str] | None = None

    def subset(self, rows: Sequence[int]) -> _Texts:
        return _Texts(words=[self.words[i] for i in rows])

    def text(self, i: int) -> str:
        return " ".join(self.words[i])

    def windows(self) -> list[list[str]]:
        """Per text, its windows of three consecutive words joined with spaces."""
        if self._windows is None:
            self._windows = [[f"{a} {b} {c}" for a, b, c in zip(w, w[1:], w[2:])] for w in self.words]
        return self._windows

    def padded(self) -> list[str]:
        """Per text, the text with a space at each end, for whole-word substring tests."""
        if self._padded is None:
            self._padded = [f" {' '.join(w)} " for w in self.words]
        return self._padded


def _heldout_inside(train: _Texts, held: _Texts, rows: Sequence[int], skip: dict[int, int] | None = None) -> dict[int, set[int]]:
    """For each held-out text found as whole words inside (or equal to) a training row: those rows.

    Held-out texts of 3+ words are keyed by their first three words, so a training row costs one set
    intersection and, on a hit, a comparison at the matching positions; the few shorter held-out texts
    are searched for directly. `skip` maps a held-out text to a training row that may contain it
    (itself, when the candidates come from train).
    """
    keyed: dict[str, list[int]] = defaultdict(list)
    short = []
    for j, w in enumerate(held.words):
        if len(w) >= 3:
            keyed[" ".join(w[:3])].append(j)
        elif w:
            short.append(j)
    found: dict[int, set[int]] = defaultdict(set)
    windows, words = train.windows(), train.words
    for i in rows:
        if keyed.keys().isdisjoint(windows[i]):
            continue
        for p, key in enumerate(windows[i]):
            for j in keyed.get(key, ()):
                target = held.words[j]
                if words[i][p:p + len(target)] == target and (skip is None or skip.get(j) != i):
                    found[j].add(i)
    padded = train.padded() if short else []
    for j in short:
        needle = f" {held.text(j)} "
        hits = {i for i in rows if needle in padded[i]} - ({skip[j]} if skip and j in skip else set())
        if hits:
            found[j] = hits
    return dict(found)


def _train_inside(train: _Texts, held: _Texts, rows: Sequence[int], min_words: int) -> set[int]:
    """Training rows of `min_words`+ words that occur as whole words inside a held-out text.

    Every position of every held-out text is indexed by the k words that start there (k = min_words,
    at most 3), so a training row costs one look-up of its own first k words.
    """
    k = min(3, max(1, min_words))
    starts: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for j, w in enumerate(held.words):
        for p in range(len(w) - k + 1):
            starts[" ".join(w[p:p + k])].append((j, p))
    hits = set()
    for i in rows:
        words = train.words[i]
        if len(words) >= min_words:
            for j, p in starts.get(" ".join(words[:k]), ()):
                if held.words[j][p:p + len(words)] == words:
                    hits.add(i)
                    break
    return hits


@dataclass
class _Overlap:
    """Violations of the split rule between one held-out split and some training rows."""

    containers: dict[int, set[int]]  # held-out text -> the training rows that contain (or equal) it
    inside: set[int]  # training rows inside a held-out text

    @property
    def rows(self) -> set[int]:
        return self.inside.union(*self.containers.values())

    def restrict(self, keep: set[int]) -> _Overlap:
        """The violations left among the training rows in `keep` (the relation is pairwise)."""
        containers = {j: rows & keep for j, rows in self.containers.items() if not rows.isdisjoint(keep)}
        return _Overlap(containers, self.inside & keep)

    def counts(self) -> dict[str, int]:
        return {"heldout_in_train": len(self.containers), "train_in_heldout": len(self.inside), "train_rows": len(self.rows)}


def _overlap(train: _Texts, held: _Texts, rows: Iterable[int] | None = None, exact: bool = False,
             min_words: int = MIN_SHARED_WORDS) -> _Overlap:
    rows = range(len(train.words)) if rows is None else sorted(rows)
    if exact:
        by_text: dict[str, set[int]] = defaultdict(set)
        for i in rows:
            by_text[train.text(i)].add(i)
        containers = {j: by_text[held.text(j)] for j, w in enumerate(held.words) if len(w) >= min_words and held.text(j) in by_text}
        return _Overlap(containers, set().union(*containers.values()))
    return _Overlap(_heldout_inside(train, held, rows), _train_inside(train, held, rows, min_words))


def split_overlap(train_texts: Sequence[str | Sequence[str]], heldout_texts: Sequence[str | Sequence[str]],
                  min_words: int = MIN_SHARED_WORDS, exact: bool = False) -> dict[str, int]:
    """Count violations of the no-shared-text rule between training and held-out texts.

    Texts are lower-cased and whitespace-normalised (token lists joined with spaces); containment
    matches whole words. Returns `heldout_in_train` (held-out texts found inside, or equal to, a
    training text), `train_in_heldout` (training texts of `min_words`+ words inside a held-out text)
    and `train_rows` (training rows breaking either rule). With `exact=True` (token tasks) only
    equality counts: held-out texts of `min_words`+ words that equal a training text.
    """
    return _overlap(_Texts(train_texts), _Texts(heldout_texts), exact=exact, min_words=min_words).counts()


def rows_sharing_text(train_texts: Sequence[str | Sequence[str]], heldout_texts: Sequence[str | Sequence[str]],
                      min_words: int = MIN_SHARED_WORDS) -> set[int]:
    """Indices of the held-out texts that break the no-shared-text rule against `train_texts`: they
    occur inside (or equal) a training text, or contain a training text of `min_words`+ words."""
    train, held = _Texts(train_texts), _Texts(heldout_texts)
    inside = set(_heldout_inside(train, held, range(len(train.words))))
    long = [i for i, w in enumerate(train.words) if len(w) >= min_words]
    containing = _heldout_inside(held, train.subset(long), range(len(held.words)))
    return inside.union(*containing.values())


# ---------------------------------------------------------------- forming the splits


def _choose_heldout(spec: TaskSpec, train: _Texts, excluded: set[int]) -> tuple[list[int], int]:
    """Training rows to hold out: long texts that no other training row contains (so never a duplicate),
    drawn with SPLIT_SEED; returns them and the number of candidates."""
    long = [i for i, w in enumerate(train.words) if len(w) >= spec.holdout_min_words]
    eligible = [i for i in long if i not in excluded]
    contained = _heldout_inside(train, train.subset(eligible), long, skip=dict(enumerate(eligible)))
    candidates = [i for j, i in enumerate(eligible) if j not in contained]
    if len(candidates) < spec.holdout:
        raise DataError(
            f"{spec.name}: only {len(candidates)} training rows can be held out as validation (texts of "
            f"{spec.holdout_min_words}+ words that no other training row contains and that share no text with the "
            f"test split), but {spec.holdout} are needed. The train file looks incomplete: re-copy it "
            f"(python scripts/fetch_data.py writes a complete copy)."
        )
    picked = np.random.default_rng(SPLIT_SEED).choice(len(candidates), size=spec.holdout, replace=False)
    return sorted(candidates[j] for j in picked), len(candidates)


@dataclass
class _Prepared:
    """A task's full splits (before max_train/max_eval), cached per source files."""

    splits: dict[str, list[dict]]
    label_names: list[str]
    source: str
    report: dict


def _form_splits(spec: TaskSpec, raw: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], dict]:
    """Train, validation and test rows under the split rule, and the report of how they were formed."""
    exact = spec.level == "token"
    train_rows = raw[spec.files["train"]]
    train = _Texts(r["text"] for r in train_rows)
    everything = set(range(len(train_rows)))
    held = {s: raw[src] for s, src in spec.files.items() if src and s != "train"}
    texts = {s: _Texts(r["text"] for r in rows) for s, rows in held.items()}
    before = {s: _overlap(train, texts[s], exact=exact) for s in held}
    chosen: list[int] = []
    candidates = 0
    for split in (s for s, src in spec.files.items() if src is None):
        excluded = set().union(*(o.rows for o in before.values()))
        chosen, candidates = _choose_heldout(spec, train, excluded)
        held[split] = [train_rows[i] for i in chosen]
        texts[split] = train.subset(chosen)
        before[split] = _overlap(train, texts[split], everything - set(chosen), exact=exact)
    keep = everything - set(chosen) - set().union(*(o.rows for o in before.values()))
    after = {s: o.restrict(keep) for s, o in before.items()}
    splits = {"train": [train_rows[i] for i in sorted(keep)], **held}
    report = _split_report(spec, len(train_rows), splits, before, after, candidates)
    return {s: splits[s] for s in SPLITS}, report


def _split_report(spec: TaskSpec, n_source: int, splits: dict[str, list[dict]], before: dict[str, _Overlap],
                  after: dict[str, _Overlap], candidates: int) -> dict:
    """Per held-out split: its rows, where they came from, the training rows dropped because of it and
    the rule's violations before and after pruning (after must be all zeros)."""
    n_held_out = sum(len(splits[s]) for s, src in spec.files.items() if src is None)
    report = {
        "rule": DUPLICATE_RULE if spec.level == "token" else SHARED_TEXT_RULE,
        "train_source_rows": n_source,
        "train_rows": len(splits["train"]),
        "held_out_from_train": n_held_out,
        "dropped_from_train": n_source - n_held_out - len(splits["train"]),
    }
    for split in ("validation", "test"):
        source = spec.files[split]
        report[split] = {
            "rows": len(splits[split]),
            "from": f"{source}.jsonl" if source else f"{n_held_out} of {candidates} eligible training rows",
            "dropped_from_train": len(before[split].rows),
            "overlap_before": before[split].counts(),
            "overlap_after": after[split].counts(),
        }
    report["describe"] = _describe(spec, report, candidates)
    return report


def _describe(spec: TaskSpec, report: dict, candidates: int) -> str:
    dropped = {s: report[s]["dropped_from_train"] for s in ("validation", "test")}
    if spec.files["validation"] is None:
        how = (
            f"Validation: {report['validation']['rows']} {spec.holdout_unit} held out from the source's "
            f"{spec.files['train']} split, drawn with SPLIT_SEED={SPLIT_SEED} from its {candidates} rows of "
            f"{spec.holdout_min_words}+ words that no other training row contains and that share no text with test. "
            f"Test: the source's {spec.files['test']} split."
        )
    else:
        how = "Validation and test: the official splits, unchanged."
    what = "duplicated a held-out sentence of 3+ tokens" if spec.level == "token" else "shared text with a held-out split"
    return (
        f"{how} Dropped from train: {report['dropped_from_train']} of {report['train_source_rows']} rows that {what} "
        f"({dropped['validation']} because of validation, {dropped['test']} because of test; a row can count for both)."
    )


def split_table(names: Iterable[str] | None = None, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """One row per task and held-out split: its size and origin, and the training rows that shared
    text with it before pruning and after (always 0). `pandas.DataFrame(split_table())` shows it."""
    table = []
    for name in names or TASKS:
        report = load_task(name, data_dir=data_dir).split_report
        for split in ("validation", "test"):
            before, after = report[split]["overlap_before"], report[split]["overlap_after"]
            table.append({
                "task": name, "split": split, "rows": report[split]["rows"], "from": report[split]["from"],
                "heldout_in_train": before["heldout_in_train"], "train_in_heldout": before["train_in_heldout"],
                "train_rows_dropped": before["train_rows"], "train_rows_after": after["train_rows"],
                "train_rows_kept": report["train_rows"], "train_source_rows": report["train_source_rows"],
            })
    return table


# ---------------------------------------------------------------- locating and reading the data


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
        raise DataError(f"The data folder given by {how} does not exist: {path}. Point it at a folder that holds <task>/<split>.jsonl, or unset it to use the Hugging Face hub.")
    return path, how


def _recopy_hint(path: Path) -> str:
    return (f"Re-copy the {path.parent.name} folder "
            "(python scripts/fetch_data.py DIR writes one wherever the hub is reachable).")


def _read_utf8(path: Path) -> str:
    """A data file's text; bytes that are not UTF-8 (a file saved in another encoding, or cut short in
    the middle of a character) are reported with the file, the line and the fix."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path.parent.name}/{path.name} line {line} is not UTF-8 text "
                        f"({err.reason} at byte {err.start}). {_recopy_hint(path)}") from err


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
            raise DataError(f"{where} line {number}: malformed JSON ({err.msg}). Repair that line or re-copy the file.") from err
        if not isinstance(row, dict):
            raise DataError(f"{where} line {number}: expected a JSON object, got {type(row).__name__}. Repair that line or re-copy the file.")
    raise DataError(f"{where}: could not be read as JSON Lines, one object per line. Re-copy the file.")


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON Lines file; a malformed line is reported with its file and line number."""
    return _numbered_rows(Path(path))[1]


def _local_label_names(folder: Path, spec: TaskSpec) -> list[str]:
    path, where = folder / "features.json", f"{folder.name}/features.json"
    example = json.dumps({spec.label_field: list(spec.label_names)})
    if not path.exists():
        raise DataError(f"{where} is missing in {folder}; it lists the label names of {spec.name} in id order. Re-copy it, or write {example}.")
    try:
        features = json.loads(_read_utf8(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{where} is not valid JSON ({err.msg}, line {err.lineno} column {err.colno}). Repair it or re-copy it.") from err
    names = features.get(spec.label_field) if isinstance(features, dict) else None
    if names is None:
        found = ", ".join(map(repr, features)) if isinstance(features, dict) else type(features).__name__
        raise DataError(f"{where} has no {spec.label_field!r} field (found: {found or 'nothing'}); it must list {spec.name}'s label names in id order. Add it: {example}.")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{where}: {spec.label_field!r} is {_short(names)} ({type(names).__name__}), "
                        f"not a list of label names in id order such as {example}. {_recopy_hint(path)}")
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
        hint = f"; the name {value!r} has id {list(names).index(value)}" if isinstance(value, str) and value in names else ""
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
        raise DataError(f"{where}: field {err.args[0]!r} is missing; {spec.name} rows need {spec.text_field!r} and {spec.label_field!r}. Repair that row or re-copy the file.") from None
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
        raise DataError(f"{where}: {problem}. Each {spec.name} row needs {spec.text_field!r} and {spec.label_field!r} with ids {ids}; correct that row or re-copy the file.")
    return {"text": list(text), "label": [int(x) for x in label]} if spec.level == "token" else {"text": text, "label": int(label)}


def _clean_rows(spec: TaskSpec, rows: list[dict], where: Callable[[int], str]) -> list[dict]:
    """Every row checked before any splitting, so that an error names the source file and line."""
    n, text_field, label_field, token = len(spec.label_names), spec.text_field, spec.label_field, spec.level == "token"
    out = []
    for k, row in enumerate(rows):
        text, label = row.get(text_field), row.get(label_field)
        if token:  # the common, valid case without building a message; anything else takes the slow path
            ok = (type(text) is list and type(label) is list and 0 < len(text) == len(label)
                  and all(type(t) is str for t in text) and all(type(x) is int and 0 <= x < n for x in label))
        else:
            ok = type(text) is str and type(label) is int and 0 <= label < n and not text.isspace() and text != ""
        out.append({"text": text, "label": label} if ok else _clean_row(spec, row, where(k)))
    return out


def _source_files(folder: Path, spec: TaskSpec) -> dict[str, Path]:
    paths = {source: folder / f"{source}.jsonl" for source in dict.fromkeys(s for s in spec.files.values() if s)}
    for path in paths.values():
        if not path.exists():
            raise DataError(f"{spec.name}: split file {path.name} is missing in {folder}. Re-copy the folder (python scripts/fetch_data.py writes one).")
    return paths


def _load_local(folder: Path, spec: TaskSpec) -> dict[str, list[dict]]:
    _local_label_names(folder, spec)
    raw = {}
    for source, path in _source_files(folder, spec).items():
        numbers, rows = _numbered_rows(path)
        raw[source] = _clean_rows(spec, rows, lambda k: f"{folder.name}/{path.name} line {numbers[k]}")
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
        raise DataError(f"{HUB_MIRROR_ENV} names a folder that does not exist: {mirror}. Point it at a folder in the hub's layout (<repo>@<revision>/<file>.parquet), or unset it.")
    return load_dataset("parquet", data_files=hub_urls(spec))


def hub_label_names(spec: TaskSpec, features) -> list[str] | None:
    """ClassLabel names that the parquet files carry for the label field, if any."""
    feature = features.get(spec.label_field)
    feature = getattr(feature, "feature", feature)  # a sequence of tags
    names = getattr(feature, "names", None)
    return list(names) if names else None


def _load_hub(spec: TaskSpec, dataset) -> dict[str, list[dict]]:
    raw = {}
    for source in dict.fromkeys(s for s in spec.files.values() if s):
        split = dataset[source]
        where = f"hub {spec.hub_id}@{spec.hub_revision[:7]} {source}"
        missing = [f for f in (spec.text_field, spec.label_field) if f not in split.column_names]
        if missing:
            raise DataError(f"{where}: column {missing[0]!r} is missing (columns: {', '.join(split.column_names)}). The pinned files do not fit the registry: fix hub_files or hub_revision in TASKS[{spec.name!r}].")
        names = hub_label_names(spec, split.features)
        if names is not None and names != list(spec.label_names):
            raise DataError(f"{where}: the files name the {spec.label_field} ids {names}, the registry {list(spec.label_names)}. Fix label_names in TASKS[{spec.name!r}].")
        rows = split.select_columns([spec.text_field, spec.label_field]).to_list()
        raw[source] = _clean_rows(spec, rows, lambda k: f"{where} row {k}")
    return raw


# ---------------------------------------------------------------- loading a task

_CACHE: OrderedDict[tuple, _Prepared] = OrderedDict()
_CACHE_SIZE = 16  # forming SST-2's splits takes seconds; notebooks and tests load the same task many times


def _cached(key: tuple, make: Callable[[], _Prepared]) -> _Prepared:
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    _CACHE[key] = prepared = make()
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return prepared


def _stamp(paths: Iterable[Path]) -> tuple:
    """Identity of files' current contents, cheaply: path, size and modification time."""
    return tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


def _prepare(spec: TaskSpec, raw: dict[str, list[dict]], source: str) -> _Prepared:
    for split, src in spec.files.items():
        if src is not None and not raw[src]:
            raise DataError(f"{spec.name} {split} split is empty: the {src} source has no rows. Re-copy the data files.")
    splits, report = _form_splits(spec, raw)
    return _Prepared(splits, list(spec.label_names), source, report)


def _full_splits(spec: TaskSpec, data_dir: str | os.PathLike | None) -> _Prepared:
    root, how = find_data_dir(data_dir)
    folder = root / spec.name if root is not None else None
    if folder is not None and folder.is_dir():
        files = [folder / "features.json", *_source_files(folder, spec).values()]
        key = (repr(spec), _stamp(p for p in files if p.exists()))
        return _cached(key, lambda: _prepare(spec, _load_local(folder, spec), "local JSON Lines"))
    urls = hub_urls(spec)
    mirror = os.environ.get(HUB_MIRROR_ENV)
    key = (repr(spec), tuple(urls.values()), _stamp(Path(u) for u in urls.values() if mirror and Path(u).exists()))
    where = f"{'the hub mirror' if mirror else 'the Hugging Face hub'} ({spec.hub_id}@{spec.hub_revision[:7]})"
    return _cached(key, lambda: _prepare(spec, _load_hub(spec, _fetch_hub(spec, folder, how)), where))


def _fetch_hub(spec: TaskSpec, folder: Path | None, how: str):
    """The pinned parquet files, or an error that says where the loader looked and how to fix it."""
    try:
        return hub_dataset(spec)
    except DataError:
        raise
    except Exception as err:
        mirror = os.environ.get(HUB_MIRROR_ENV)
        looked = f"{folder} (found through {how})" if folder is not None else (
            f"no local folder ({how})" if mirror else
            "no local folder (none given by data_dir, MTL_DATA_DIR, or a shared/data beside the repository)")
        problem = f"{type(err).__name__}: {str(err).splitlines()[0].rstrip('.') if str(err) else ''}"
        if mirror:
            fix = f"Put the files at {', '.join(hub_urls(spec).values())}, or unset {HUB_MIRROR_ENV}."
            hub = f"the hub mirror in {HUB_MIRROR_ENV} ({spec.hub_id})"
        else:
            fix = (f"Set MTL_DATA_DIR to a folder holding {spec.name}/<split>.jsonl and {spec.name}/features.json "
                   f"(python scripts/fetch_data.py DIR writes one wherever the hub is reachable), or go online.")
            hub = f"the Hugging Face hub ({spec.hub_id})"
        raise DataError(f"Could not load task {spec.name!r}. Looked in {looked}, then {hub}: {problem}. {fix}") from err


def _check_count(value: object, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DataError(f"{what}: expected a whole number of rows or None (all rows), got {value!r} ({type(value).__name__}). Pass an int such as 500, or None.")
    if value < 1:
        raise DataError(f"{what}: a subset needs at least 1 row, got {value}. Pass a positive whole number, or None for all rows.")


def _subset(rows: list[dict], n: int | None, what: str) -> list[dict]:
    if n is None:
        return rows
    if n > len(rows):
        raise DataError(f"{what}: asked for {n} rows but only {len(rows)} exist. Ask for at most {len(rows)}, or None for all.")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(rows))[:n]
    return [rows[i] for i in sorted(order)]


def _copy_row(row: dict) -> dict:
    # rows are shared with the cache: a caller that edits its rows must not change later loads
    return {k: list(v) if isinstance(v, list) else v for k, v in row.items()}


def load_task(
    name: str,
    max_train: int | None = None,
    max_eval: int | None = None,
    data_dir: str | os.PathLike | None = None,
) -> TaskData:
    """Load a task by name with fixed, leak-free train/validation/test splits and deterministic subsets.

    Looks in `data_dir`, then MTL_DATA_DIR, then a shared/data folder beside the repository, then
    the pinned parquet files on the Hugging Face hub (or the MTL_HUB_MIRROR folder). Held-out splits
    share no text with train (see SHARED_TEXT_RULE; token tasks: DUPLICATE_RULE); `split_report`
    says what was held out and dropped. `max_train` and `max_eval` then take nested random subsets.
    """
    spec = task_spec(name)
    _check_count(max_train, f"{name} train (max_train)")
    _check_count(max_eval, f"{name} validation and test (max_eval)")
    full = _full_splits(spec, data_dir)
    splits = {"train": _subset(full.splits["train"], max_train, f"{name} train (max_train)")}
    for split in ("validation", "test"):
        rows = full.splits[split]
        splits[split] = _subset(rows, min(max_eval, len(rows)) if max_eval is not None else None, f"{name} {split} (max_eval)")
    splits = {s: [_copy_row(r) for r in rows] for s, rows in splits.items()}
    return TaskData(name, spec.level, list(full.label_names), splits, full.source, spec, copy.deepcopy(full.report))
