"""The task registry: the one place that knows dataset names, hub ids and revisions, fields, label
names and what the labels mean; and `TaskData`, a task's rows per split."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .errors import UnknownTaskError
from .leakage import MIN_SHARED_WORDS

SPLITS = ("train", "validation", "test")
SPLIT_SEED = 0  # fixes held-out splits and subsets once, independent of the training seed


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
    # What each label id means, where two data sets name the same classes differently ("neg" and
    # "negative"); empty: the label names themselves. Heads move between tasks whose meanings match.
    label_meanings: tuple[str, ...] = ()

    @property
    def meanings(self) -> tuple[str, ...]:
        return self.label_meanings or self.label_names


_MOVIE_REVIEW = ("a negative movie review: the film is bad", "a positive movie review: the film is good")

# Revisions: commits of the parquet files (nyu-mll/glue is parquet-native; the others are commits of the
# hub's refs/convert/parquet branch, since their main branch holds a loading script that `datasets` refuses).
TASKS: dict[str, TaskSpec] = {
    "sst2": TaskSpec(
        name="sst2",
        level="sentence",
        text_field="sentence",
        label_field="label",
        label_names=("negative", "positive"),
        hub_id="nyu-mll/glue",
        hub_revision="bcdcba79d07bc864c1c254ccfcedcce55bcc9a8c",
        hub_files={
            "train": "sst2/train-00000-of-00001.parquet",
            "validation": "sst2/validation-00000-of-00001.parquet",
        },
        files={"train": "train", "validation": None, "test": "validation"},
        # SST-2 train is phrases cut from parse trees: hold out whole sentences, like its test split
        holdout=872,
        holdout_min_words=10,
        holdout_unit="whole sentences",
        label_descriptions=_MOVIE_REVIEW,
        description="GLUE SST-2 movie-review sentiment (GLUE's labelled validation set serves as test)",
    ),
    "rotten_tomatoes": TaskSpec(
        name="rotten_tomatoes",
        level="sentence",
        text_field="text",
        label_field="label",
        label_names=("neg", "pos"),
        label_meanings=("negative", "positive"),
        hub_id="cornell-movie-review-data/rotten_tomatoes",
        hub_revision="a2b32381b51e711ccca777c4b295adf3212c4a2f",
        hub_files={s: f"default/{s}/0000.parquet" for s in SPLITS},
        files={s: s for s in SPLITS},
        label_descriptions=_MOVIE_REVIEW,
        description="Pang & Lee sentence polarity (Rotten Tomatoes snippets)",
    ),
    "trec": TaskSpec(
        name="trec",
        level="sentence",
        text_field="text",
        label_field="coarse_label",
        label_names=("ABBR", "ENTY", "DESC", "HUM", "LOC", "NUM"),
        hub_id="CogComp/trec",
        hub_revision="65752bf53af25bc935a0dce92fb5b6c930728450",
        hub_files={s: f"default/{s}/0000.parquet" for s in ("train", "test")},
        files={"train": "train", "validation": None, "test": "test"},
        holdout=500,
        holdout_unit="questions",
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
        name="conll2003",
        level="token",
        text_field="tokens",
        label_field="ner_tags",
        label_names=("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"),
        hub_id="eriktks/conll2003",
        hub_revision="ce85b39f9dd99f552d0739d456814e95fb6a39b0",
        hub_files={s: f"conll2003/{s}/0000.parquet" for s in SPLITS},
        files={s: s for s in SPLITS},
        description="CoNLL-2003 English named-entity recognition (IOB2)",
    ),
    "wnut_17": TaskSpec(
        name="wnut_17",
        level="token",
        text_field="tokens",
        label_field="ner_tags",
        label_names=(
            "O",
            "B-corporation",
            "I-corporation",
            "B-creative-work",
            "I-creative-work",
            "B-group",
            "I-group",
            "B-location",
            "I-location",
            "B-person",
            "I-person",
            "B-product",
            "I-product",
        ),
        hub_id="leondz/wnut_17",
        hub_revision="1ac0b6d18c8a1a1d1606b24bef78b8af2f92d2d9",
        hub_files={s: f"wnut_17/{s}/0000.parquet" for s in SPLITS},
        files={s: s for s in SPLITS},
        description="WNUT-17 emerging and rare entities (IOB2)",
    ),
}


def same_labels(a: TaskSpec, b: TaskSpec) -> bool:
    """Whether two tasks' label ids mean the same classes, in the same order (a head of one can score
    the other, e.g. SST-2's sentiment head on Rotten Tomatoes)."""
    return a.meanings == b.meanings


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
