"""Forming a task's fixed splits from its source files: held-out rows drawn once (SPLIT_SEED),
training rows that share text with a held-out split dropped, and a report of what was done."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .leakage import DUPLICATE_RULE, SHARED_TEXT_RULE, Overlap, Texts, heldout_inside, overlap
from .tasks import SPLIT_SEED, SPLITS, TaskSpec


def _choose_heldout(spec: TaskSpec, train: Texts, excluded: set[int]) -> tuple[list[int], int]:
    """Training rows to hold out: long texts that no other training row contains (so never a duplicate),
    drawn with SPLIT_SEED; returns them and the number of candidates."""
    long = [i for i, w in enumerate(train.words) if len(w) >= spec.holdout_min_words]
    eligible = [i for i in long if i not in excluded]
    contained = heldout_inside(train, train.subset(eligible), long, skip=dict(enumerate(eligible)))
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
class Prepared:
    """A task's full splits (before max_train/max_eval), cached per source files."""

    splits: dict[str, list[dict]]
    label_names: list[str]
    source: str
    report: dict


def form_splits(spec: TaskSpec, raw: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], dict]:
    """Train, validation and test rows under the split rule, and the report of how they were formed."""
    exact = spec.level == "token"
    train_rows = raw[spec.files["train"]]
    train = Texts(r["text"] for r in train_rows)
    everything = set(range(len(train_rows)))
    held = {s: raw[src] for s, src in spec.files.items() if src and s != "train"}
    texts = {s: Texts(r["text"] for r in rows) for s, rows in held.items()}
    before = {s: overlap(train, texts[s], exact=exact) for s in held}
    chosen: list[int] = []
    candidates = 0
    for split in (s for s, src in spec.files.items() if src is None):
        excluded = set().union(*(o.rows for o in before.values()))
        chosen, candidates = _choose_heldout(spec, train, excluded)
        held[split] = [train_rows[i] for i in chosen]
        texts[split] = train.subset(chosen)
        before[split] = overlap(train, texts[split], everything - set(chosen), exact=exact)
    keep = everything - set(chosen) - set().union(*(o.rows for o in before.values()))
    after = {s: o.restrict(keep) for s, o in before.items()}
    splits = {"train": [train_rows[i] for i in sorted(keep)], **held}
    report = _split_report(spec, len(train_rows), splits, before, after, candidates)
    return {s: splits[s] for s in SPLITS}, report


def _split_report(
    spec: TaskSpec,
    n_source: int,
    splits: dict[str, list[dict]],
    before: dict[str, Overlap],
    after: dict[str, Overlap],
    candidates: int,
) -> dict:
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
    what = (
        "duplicated a held-out sentence of 3+ tokens" if spec.level == "token" else "shared text with a held-out split"
    )
    return (
        f"{how} Dropped from train: {report['dropped_from_train']} of {report['train_source_rows']} rows that {what} "
        f"({dropped['validation']} because of validation, {dropped['test']} because of test; a row can count for both)."
    )
