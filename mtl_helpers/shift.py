"""How far an out-of-distribution set is from the data a model trained on, in two measures a reader can
weigh: a domain classifier (can a linear model on frozen sentence embeddings tell the two sets apart?
50% means it cannot, 100% that they never overlap) and the share of the set's words never seen in the
training texts. A robustness claim tested on a set the classifier cannot tell apart is tested in
distribution, whatever the set is called."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .errors import MTLError
from .layer_probe import wilson_interval

WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Shift:
    """The distance of a set B from a reference set A."""

    domain_accuracy: float  # cross-validated accuracy of telling A from B (balanced sets): 0.5 = no shift
    low: float  # 95% Wilson interval of that accuracy
    high: float
    rows: int  # rows per side that the domain classifier used
    unseen_words: float  # share of B's word tokens that never occur in A's texts

    def sentence(self, a: str, b: str) -> str:
        return (
            f"a linear classifier on frozen sentence embeddings tells {b} from {a} in "
            f"{100 * self.domain_accuracy:.0f}% of held-out cases (95% interval {100 * self.low:.0f} to "
            f"{100 * self.high:.0f}%; 50% would mean no shift), and {100 * self.unseen_words:.1f}% of {b}'s "
            f"words never occur in {a}'s texts"
        )


def unseen_word_share(reference_texts: Sequence[str], texts: Sequence[str]) -> float:
    """The share of word tokens of `texts` (lower-cased) that occur nowhere in `reference_texts`."""
    seen = {w for t in reference_texts for w in WORD.findall(t.lower())}
    words = [w for t in texts for w in WORD.findall(t.lower())]
    if not words:
        raise MTLError("unseen_word_share: the texts hold no words.")
    return sum(w not in seen for w in words) / len(words)


def domain_shift(
    reference_embeddings: np.ndarray,
    embeddings: np.ndarray,
    reference_texts: Sequence[str],
    texts: Sequence[str],
    folds: int = 5,
    seed: int = 0,
) -> Shift:
    """How far `embeddings` (set B) lie from `reference_embeddings` (set A): a balanced sample of both
    (the smaller set's size), a standardised logistic regression scored by `folds`-fold cross-validation,
    and the unseen-word share of B's texts against A's (e.g. A's training texts)."""
    a, b = np.asarray(reference_embeddings, dtype=float), np.asarray(embeddings, dtype=float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise MTLError(f"domain_shift needs two (rows, features) arrays of the same width, got {a.shape}, {b.shape}.")
    n = min(len(a), len(b))
    if n < 2 * folds:
        raise MTLError(f"domain_shift needs at least {2 * folds} rows per set for {folds}-fold cross-validation.")
    rng = np.random.default_rng(seed)
    a, b = a[rng.permutation(len(a))[:n]], b[rng.permutation(len(b))[:n]]
    features = np.concatenate([a, b])
    labels = np.array([0] * n + [1] * n)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    predicted = cross_val_predict(model, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    right = int((predicted == labels).sum())
    low, high = wilson_interval(right, len(labels))
    return Shift(right / len(labels), low, high, n, unseen_word_share(reference_texts, texts))
