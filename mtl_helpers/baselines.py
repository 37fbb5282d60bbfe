"""A strong baseline without pretraining: TF-IDF n-grams and a logistic regression per sentence task.

Features: word 1-2 grams and character 2-5 grams within word boundaries (`char_wb`), each TF-IDF with
sublinear term frequency, side by side (a FeatureUnion), fitted on the training rows only. The
logistic regression's C is chosen on validation by `logreg.sweep_c` (a log grid, extended by 10 past
an edge holding the best score, up to stated limits); the chosen fit is the one trained on the
training rows: no refit on train + validation, so validation only chooses and test gives the verdicts,
as for every arm of the book.

The result holds one run record (`RunRecord.from_outcomes`, through `report.predictions_record`) of all
the tasks, scored on validation and test (and on `ood` data sets under the split name
"ood:<data name>", as `recipes.score_ood` stores them), so `compare` takes it as an arm.

Comparing a deterministic method: the fit has no seed to vary (lbfgs is deterministic), so it is one run,
and its record is an arm of one run. `compare([baseline.record], five_seed_records)` then computes the
t interval without pairing: the seed part comes from the other arm alone, and the example part counts
the baseline's whole per-example variance (it has no run-to-run luck to leave out). Copying the record
under the other arm's seeds gives exactly the same interval (the paired differences then vary only as
the other arm does), so copies are never needed. Against another one-run arm, `compare` uses the paired
percentile bootstrap over the examples.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline

from .errors import MTLError
from .logreg import C_GRID, C_LIMITS, MAX_ITER, CSweep, logistic_scorer, sweep_c
from .records import RunRecord, encode_outcomes, examples_digest, split_rows
from .report import predictions_record
from .tasks import TaskData, same_labels

SCENARIO = "tfidf-logreg"
MODEL = "tfidf-logreg"  # the record's model name: no pretrained encoder
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)


def tfidf_features() -> FeatureUnion:
    """Word 1-2 grams and char_wb 2-5 grams, TF-IDF with sublinear tf, side by side (not yet fitted)."""
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, sublinear_tf=True)),
        ]
    )


def texts_labels(rows: Sequence[dict]) -> tuple[list[str], np.ndarray]:
    return [r["text"] for r in rows], np.array([r["label"] for r in rows], dtype=int)


@dataclass
class TfidfFit:
    """One task's baseline: the sweep of C on validation and the chosen pipeline (fitted on train only)."""

    task: str
    sweep: CSweep
    pipeline: Pipeline = field(repr=False)  # the TF-IDF features, then the logistic regression at the chosen C
    train_rows: int  # the training rows the features and the regression were fitted on
    train_digest: str  # records.examples_digest of those rows, in order
    seconds: float  # features, every fit of the sweep and its validation scores

    @property
    def table(self) -> pd.DataFrame:
        """Validation accuracy per C tried (index "C"), with columns "converged" and "extended"."""
        return self.sweep.table

    @property
    def chosen(self) -> float:
        return self.sweep.chosen

    @property
    def edge(self) -> str:
        return self.sweep.edge

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return self.pipeline.predict(list(texts))


def fit_tfidf(
    task: TaskData,
    grid: Sequence[float] = C_GRID,
    limits: tuple[float, float] = C_LIMITS,
    seed: int = 0,
    max_iter: int = MAX_ITER,
) -> TfidfFit:
    """The TF-IDF features fitted on `task`'s training rows, and a logistic regression at each C of the
    grid (extended at an edge), the C with the best validation accuracy kept."""
    if task.level != "sentence":
        raise MTLError(
            f"The TF-IDF baseline classifies sentences; {task.name!r} is a {task.level}-level task. "
            "Give it sentence tasks only (SST-2, TREC, ...)."
        )
    started = time.perf_counter()
    train_texts, train_labels = texts_labels(task.splits["train"])
    valid_texts, valid_labels = texts_labels(task.splits["validation"])
    if len(set(train_labels.tolist())) < 2:
        raise MTLError(f"{task.name}: the training rows hold a single class; a classifier needs at least two.")
    if not valid_texts:
        raise MTLError(f"{task.name}: the validation split is empty; C is chosen on it, so give it rows.")
    features = tfidf_features()
    train_x = features.fit_transform(
        train_texts
    )  # fitted on train only: the vocabulary and idf never see held-out text
    valid_x = features.transform(valid_texts)
    sweep = sweep_c(logistic_scorer(train_x, train_labels, valid_x, valid_labels, max_iter, seed), grid, limits)
    pipeline = Pipeline([("features", features), ("logreg", sweep.model)])
    return TfidfFit(
        task.name,
        sweep,
        pipeline,
        len(train_texts),
        examples_digest(task.splits["train"]),
        time.perf_counter() - started,
    )


@dataclass
class TfidfBaseline:
    """`tfidf_baseline`'s result: one fit per task and one run record of all of them."""

    record: RunRecord
    fits: dict[str, TfidfFit]

    def summary(self) -> pd.DataFrame:
        """One row per task: the chosen C, its edge status, the values added to the grid, and accuracy on
        the record's splits (validation, test, ood:...)."""
        rows = []
        for name, fit in self.fits.items():
            row = {"task": name, "C": fit.chosen, "edge": fit.edge, "extended": fit.sweep.extended}
            for split, per_task in self.record.metrics.items():
                if name in per_task:
                    row[f"{split} accuracy"] = per_task[name]["accuracy"]
            rows.append({**row, "train rows": fit.train_rows, "seconds": round(fit.seconds, 2)})
        return pd.DataFrame(rows).set_index("task")


def score_ood_rows(record: RunRecord, fits: dict[str, TfidfFit], tasks: dict[str, TaskData], ood) -> None:
    """For every (head, data) in `ood`, task `head`'s fit scored on `data`'s test split, stored in `record`
    under "ood:<data name>" as `recipes.score_ood` stores a Trainer's (metrics, outcomes, digest)."""
    for head, data in ood:
        if head not in fits:
            raise MTLError(f"ood names the task {head!r}, which is not among the baseline's tasks {sorted(fits)}.")
        if not same_labels(data.spec, tasks[head].spec):
            raise MTLError(
                f"{data.name}'s labels {data.label_names} differ from {head}'s {tasks[head].label_names}; "
                "a classifier can only be scored on data with its own labels."
            )
        texts, labels = texts_labels(data.splits["test"])
        if not texts:
            raise MTLError(f"{data.name}'s test split is empty; there is nothing to score out of distribution.")
        correct = (fits[head].predict(texts) == labels).astype(np.int8)
        split = f"ood:{data.name}"
        record.metrics.setdefault(split, {})[head] = {"accuracy": float(correct.mean())}
        record.outcomes.setdefault(split, {})[head] = encode_outcomes(correct)
        record.examples.setdefault(split, {})[head] = examples_digest(data.splits["test"])


def tfidf_baseline(
    tasks: Sequence[TaskData],
    seed: int = 0,
    grid: Sequence[float] = C_GRID,
    *,
    limits: tuple[float, float] = C_LIMITS,
    splits: Sequence[str] = ("validation", "test"),
    ood: Sequence[tuple[str, TaskData]] = (),
    profile: str = "cpu",
    scenario: str = SCENARIO,
    max_iter: int = MAX_ITER,
) -> TfidfBaseline:
    """The TF-IDF + logistic-regression baseline of every task (`fit_tfidf`: C chosen on validation,
    no refit), and its run record on `splits` and on each (task, data) of `ood` (data's test split, as
    "ood:<data name>"). `seed` is the record's seed (and the regression's random_state, which lbfgs
    does not use): one record is the whole arm of a deterministic method (module docstring)."""
    tasks = list(tasks)
    if not tasks:
        raise MTLError("tfidf_baseline needs at least one task.")
    fits = {t.name: fit_tfidf(t, grid, limits, seed, max_iter) for t in tasks}
    started = time.perf_counter()
    record = predictions_record(
        scenario,
        profile,
        seed,
        MODEL,
        tasks,
        lambda task, split: fits[task.name].predict([r["text"] for r in split_rows(task, split)]),
        tuple(splits),
    )
    score_ood_rows(record, fits, {t.name: t for t in tasks}, ood)
    scored = sum(len(v) for per in record.outcomes.values() for v in per.values())
    seconds = time.perf_counter() - started
    record.budget = {"examples": sum(f.train_rows for f in fits.values())}
    record.train_seconds = round(sum(f.seconds for f in fits.values()), 3)
    record.inference_examples_per_second = round(scored / seconds, 2) if seconds else None
    record.config = {
        "grid": [float(c) for c in grid],
        "limits": [float(c) for c in limits],
        "word_ngrams": list(WORD_NGRAMS),
        "char_ngrams": list(CHAR_NGRAMS),
        "sublinear_tf": True,
        "max_iter": max_iter,
        "refit_on_validation": False,
    }
    record.extra.update(
        c_table={n: {f"{c:g}": float(a) for c, a in f.table["validation accuracy"].items()} for n, f in fits.items()},
        chosen_c={n: f.chosen for n, f in fits.items()},
        edge={n: f.edge for n, f in fits.items()},
    )
    return TfidfBaseline(record, fits)


__all__ = ["MODEL", "SCENARIO", "TfidfBaseline", "TfidfFit", "fit_tfidf", "tfidf_baseline", "tfidf_features"]
