"""Leakage between splits: whether a held-out text shares text with training. Texts are compared
lower-cased with normalised whitespace, as whole words."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MIN_SHARED_WORDS = 3  # a training text this long may not occur inside a held-out text
SHARED_TEXT_RULE = (
    "no shared text: after lower-casing and normalising whitespace, no held-out text occurs (as whole "
    f"words) inside a training text, and no training text of {MIN_SHARED_WORDS}+ words occurs inside a held-out text"
)
DUPLICATE_RULE = (
    f"no held-out sentence of {MIN_SHARED_WORDS}+ tokens also occurs in training "
    "(tokens joined with spaces, lower-cased)"
)


def normalize_text(text: str | Sequence[str]) -> str:
    """Lower-cased text with single spaces; a token list is joined with spaces first."""
    if not isinstance(text, str):
        text = " ".join(text)
    return " ".join(text.lower().split())


class Texts:
    """Normalised texts as word lists, with their 3-word windows computed once per split."""

    def __init__(self, texts: Iterable[str | Sequence[str]] = (), words: list[list[str]] | None = None):
        if words is None:
            words = [(t if isinstance(t, str) else " ".join(t)).lower().split() for t in texts]
        self.words = words
        self._windows: list[list[str]] | None = None
        self._padded: list[str] | None = None

    def subset(self, rows: Sequence[int]) -> Texts:
        return Texts(words=[self.words[i] for i in rows])

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


def heldout_inside(
    train: Texts, held: Texts, rows: Sequence[int], skip: dict[int, int] | None = None
) -> dict[int, set[int]]:
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
                if words[i][p : p + len(target)] == target and (skip is None or skip.get(j) != i):
                    found[j].add(i)
    padded = train.padded() if short else []
    for j in short:
        needle = f" {held.text(j)} "
        hits = {i for i in rows if needle in padded[i]} - ({skip[j]} if skip and j in skip else set())
        if hits:
            found[j] = hits
    return dict(found)


def train_inside(train: Texts, held: Texts, rows: Sequence[int], min_words: int) -> set[int]:
    """Training rows of `min_words`+ words that occur as whole words inside a held-out text.

    Every position of every held-out text is indexed by the k words that start there (k = min_words,
    at most 3), so a training row costs one look-up of its own first k words.
    """
    k = min(3, max(1, min_words))
    starts: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for j, w in enumerate(held.words):
        for p in range(len(w) - k + 1):
            starts[" ".join(w[p : p + k])].append((j, p))
    hits = set()
    for i in rows:
        words = train.words[i]
        if len(words) >= min_words:
            for j, p in starts.get(" ".join(words[:k]), ()):
                if held.words[j][p : p + len(words)] == words:
                    hits.add(i)
                    break
    return hits


@dataclass
class Overlap:
    """Violations of the split rule between one held-out split and some training rows."""

    containers: dict[int, set[int]]  # held-out text -> the training rows that contain (or equal) it
    inside: set[int]  # training rows inside a held-out text

    @property
    def rows(self) -> set[int]:
        return self.inside.union(*self.containers.values())

    def restrict(self, keep: set[int]) -> Overlap:
        """The violations left among the training rows in `keep` (the relation is pairwise)."""
        containers = {j: rows & keep for j, rows in self.containers.items() if not rows.isdisjoint(keep)}
        return Overlap(containers, self.inside & keep)

    def counts(self) -> dict[str, int]:
        return {
            "heldout_in_train": len(self.containers),
            "train_in_heldout": len(self.inside),
            "train_rows": len(self.rows),
        }


def overlap(
    train: Texts, held: Texts, rows: Iterable[int] | None = None, exact: bool = False, min_words: int = MIN_SHARED_WORDS
) -> Overlap:
    rows = range(len(train.words)) if rows is None else sorted(rows)
    if exact:
        by_text: dict[str, set[int]] = defaultdict(set)
        for i in rows:
            by_text[train.text(i)].add(i)
        containers = {
            j: by_text[held.text(j)]
            for j, w in enumerate(held.words)
            if len(w) >= min_words and held.text(j) in by_text
        }
        return Overlap(containers, set().union(*containers.values()))
    return Overlap(heldout_inside(train, held, rows), train_inside(train, held, rows, min_words))


def split_overlap(
    train_texts: Sequence[str | Sequence[str]],
    heldout_texts: Sequence[str | Sequence[str]],
    min_words: int = MIN_SHARED_WORDS,
    exact: bool = False,
) -> dict[str, int]:
    """Count violations of the no-shared-text rule between training and held-out texts.

    Texts are lower-cased and whitespace-normalised (token lists joined with spaces); containment
    matches whole words. Returns `heldout_in_train` (held-out texts found inside, or equal to, a
    training text), `train_in_heldout` (training texts of `min_words`+ words inside a held-out text)
    and `train_rows` (training rows breaking either rule). With `exact=True` (token tasks) only
    equality counts: held-out texts of `min_words`+ words that equal a training text.
    """
    return overlap(Texts(train_texts), Texts(heldout_texts), exact=exact, min_words=min_words).counts()


def rows_sharing_text(
    train_texts: Sequence[str | Sequence[str]],
    heldout_texts: Sequence[str | Sequence[str]],
    min_words: int = MIN_SHARED_WORDS,
) -> set[int]:
    """Indices of the held-out texts that break the no-shared-text rule against `train_texts`: they
    occur inside (or equal) a training text, or contain a training text of `min_words`+ words."""
    train, held = Texts(train_texts), Texts(heldout_texts)
    inside = set(heldout_inside(train, held, range(len(train.words))))
    long = [i for i, w in enumerate(train.words) if len(w) >= min_words]
    containing = heldout_inside(held, train.subset(long), range(len(held.words)))
    return inside.union(*containing.values())
