"""One record per run (a dataclass), written atomically as strict JSON, keyed by scenario, tasks,
model, profile and seed; collecting records filters on those keys and refuses to mix tasks or models
in one table. A record names the examples it was scored on, so runs are compared example by example."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .batches import TokenizedTasks
from .encoder import model_label
from .errors import MTLError
from .jsonio import write_json_atomic
from .locations import check_folder_name, is_book_results, results_root, shown_path

RECORD_SCHEMA = 3  # 3: records name the examples they were scored on (`examples`); older ones are not read
REPLACE_ENV = "MTL_REPLACE_RECORDS"  # "1": a run may replace the book's own record made with another spec


def examples_digest(rows: list[dict]) -> str:
    """sha256 of the texts and labels of `rows`, in order: two runs whose outcomes are compared example by
    example must have been scored on the same rows in the same order, not merely as many."""
    canonical = json.dumps([[row["text"], row["label"]] for row in rows], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def split_rows(task, split: str) -> list[dict]:
    """The rows of `task` (a TaskData) that a Trainer scores on `split`, in the order of its outcomes
    ("train_eval": the fixed slice of the training rows)."""
    try:
        return TokenizedTasks({task.name: task}, tokenizer=None).source_rows(task.name, split)
    except KeyError as err:
        raise MTLError(f"{err.args[0]} Score only the splits the task has.") from None


def encode_outcomes(outcomes: np.ndarray):
    outcomes = np.asarray(outcomes)
    if outcomes.ndim == 1:  # 0/1 per example, kept compact: "0110..."
        return "".join("1" if x else "0" for x in outcomes)
    return outcomes.astype(int).tolist()


def decode_outcomes(value) -> np.ndarray:
    if isinstance(value, str):
        return np.frombuffer(value.encode(), dtype=np.uint8) - ord("0")
    return np.asarray(value, dtype=float)


@dataclass
class RunRecord:
    """Everything the book reports about one run of one scenario with one seed."""

    scenario: str
    profile: str
    seed: int
    model: str
    tasks: dict[str, dict]  # name -> {"level", "metric", "sizes": {split: rows}}
    device: str = "cpu"
    budget: dict = field(default_factory=dict)  # {"examples", "steps", "epochs"}
    trained: dict[str, float] = field(default_factory=dict)  # groups that ever trained -> peak rate
    trainable_params: int = 0
    total_params: int = 0
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # split -> task -> metric -> value
    outcomes: dict[str, dict[str, object]] = field(default_factory=dict)  # split -> task -> per-example outcomes
    train_seconds: float = 0.0
    train_examples_per_second: float | None = None
    inference_examples_per_second: float | None = None
    peak_memory_mb: float | None = None
    memory_method: str = ""
    interrupted: bool = False
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    # split -> task -> examples_digest of the rows scored, in the order of `outcomes`: compare pairs only the
    # same examples
    examples: dict[str, dict[str, str]] = field(default_factory=dict)
    schema: int = RECORD_SCHEMA

    def __post_init__(self) -> None:
        check_folder_name("Scenario", self.scenario)
        check_folder_name("Profile", self.profile)

    # -- keys
    @property
    def task_key(self) -> str:
        return "+".join(sorted(self.tasks))

    @property
    def key(self) -> tuple:
        return (self.scenario, self.task_key, self.model, self.profile, self.seed)

    def file_name(self) -> str:
        # The slug keeps the name readable; the hash of the exact name keeps "org/x" and "org_x" apart.
        model = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model)
        model_hash = hashlib.sha256(self.model.encode()).hexdigest()[:8]
        return f"{self.task_key}--{model}-{model_hash}--seed{self.seed}.json"

    # -- reading values
    def metric(self, task: str, split: str = "validation", name: str | None = None) -> float:
        name = name or self.tasks[task]["metric"]
        value = self.metrics.get(split, {}).get(task, {}).get(name)
        return float("nan") if value is None else float(value)

    def mean_metric(self, split: str = "validation") -> float:
        return float(np.mean([self.metric(t, split) for t in self.tasks]))

    def outcome_array(self, task: str, split: str = "validation") -> np.ndarray:
        if split not in self.outcomes:
            raise MTLError(
                f"Record {self.scenario!r} (seed {self.seed}) holds no outcomes of {task!r} on {split!r}; "
                f"it has outcomes on the splits {sorted(self.outcomes)}."
            )
        if task not in self.outcomes[split]:
            raise MTLError(
                f"Record {self.scenario!r} (seed {self.seed}) holds no outcomes of {task!r} on {split!r}; "
                f"it has outcomes of the tasks {sorted(self.outcomes[split])} there."
            )
        return decode_outcomes(self.outcomes[split][task])

    # -- building
    @classmethod
    def from_trainer(cls, trainer, scenario: str, profile: str, splits: tuple[str, ...], extra: dict) -> "RunRecord":

        metrics, outcomes, examples_scored, inference = {}, {}, {}, []
        for split in splits:
            for task, result in trainer.evaluate_outcomes(split).items():
                metrics.setdefault(split, {})[task] = result.metrics
                outcomes.setdefault(split, {})[task] = encode_outcomes(result.outcomes)
                rows = trainer.tokenized.source_rows(task, split)
                examples_scored.setdefault(split, {})[task] = examples_digest(rows)
                inference.append((result.examples, result.seconds))
        examples, seconds = map(sum, zip(*inference)) if inference else (0, 0.0)
        return cls(
            scenario=scenario,
            profile=profile,
            seed=trainer.config.seed,
            model=model_label(trainer.model),
            tasks={
                n: {"level": t.level, "metric": trainer.primary_metrics[n], "sizes": t.sizes()}
                for n, t in trainer.tasks.items()
            },
            device=trainer.device.type,
            budget={
                "examples": trainer.examples_seen,
                "steps": trainer.global_step,
                "epochs": round(trainer.epochs_done, 4),
            },
            trained=dict(trainer.trained_groups),
            trainable_params=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            total_params=sum(p.numel() for p in trainer.model.parameters()),
            metrics=metrics,
            outcomes=outcomes,
            train_seconds=round(trainer.train_seconds, 3),
            train_examples_per_second=round(trainer.examples_seen / trainer.train_seconds, 2)
            if trainer.train_seconds
            else None,
            inference_examples_per_second=round(examples / seconds, 2) if seconds else None,
            peak_memory_mb=round(trainer.peak_memory_mb, 1) if trainer.memory_method else None,
            memory_method=trainer.memory_method,
            interrupted=trainer.history.ever_interrupted,
            config=trainer.config_dict(),
            extra=dict(extra),
            examples=examples_scored,
        )

    @classmethod
    def from_outcomes(
        cls, scenario: str, profile: str, seed: int, model: str, tasks: dict, results: dict, **fields_
    ) -> "RunRecord":
        """A record for a method without a Trainer (e.g. a nearest-centroid classifier): `results` maps
        split -> task -> TaskEvaluation, each with one outcome per row of that task's split, in row order."""
        examples_scored = {}
        for split, per in results.items():
            for name, result in per.items():
                rows = split_rows(tasks[name], split)
                if len(result.outcomes) != len(rows):
                    raise MTLError(
                        f"from_outcomes: {len(result.outcomes)} outcomes of {name!r} on {split!r}, but the "
                        f"split has {len(rows)} rows; give one outcome per row, in the split's row order."
                    )
                examples_scored.setdefault(split, {})[name] = examples_digest(rows)
        return cls(
            scenario=scenario,
            profile=profile,
            seed=seed,
            model=model,
            tasks={
                n: {
                    "level": t.level,
                    "metric": "accuracy" if t.level == "sentence" else "entity_f1",
                    "sizes": t.sizes(),
                }
                for n, t in tasks.items()
            },
            metrics={s: {t: r.metrics for t, r in per.items()} for s, per in results.items()},
            outcomes={s: {t: encode_outcomes(r.outcomes) for t, r in per.items()} for s, per in results.items()},
            examples=examples_scored,
            **fields_,
        )

    def to_json(self) -> dict:
        # The file's keys are sorted; "task_order" keeps the tasks in training order (task A first) for reading back.
        return {**asdict(self), "task_order": list(self.tasks)}

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        _check_record_types(data)
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        order = data.get("task_order")
        if isinstance(order, list) and sorted(order) == sorted(record.tasks):
            record.tasks = {t: record.tasks[t] for t in order}
        return record


# The main fields of a record file and the JSON types they must have (a file of another shape is corrupt).
_FIELD_TYPES = {
    "scenario": str,
    "profile": str,
    "seed": int,
    "model": str,
    "tasks": dict,
    "device": str,
    "budget": dict,
    "trained": dict,
    "metrics": dict,
    "outcomes": dict,
    "examples": dict,
    "interrupted": bool,
    "config": dict,
    "extra": dict,
    "schema": int,
}


def _check_record_types(data: object) -> None:
    if not isinstance(data, dict):
        raise MTLError(f"the file holds a JSON {type(data).__name__}, not a record object")
    for name, kind in _FIELD_TYPES.items():
        if name not in data:  # a missing required field fails in the constructor; the others have defaults
            continue
        value = data[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MTLError(f"field {name!r} is {value!r}, not a {kind.__name__}")
    for name in ("tasks", "metrics", "outcomes", "examples"):
        if not all(isinstance(v, dict) for v in data.get(name, {}).values()):
            raise MTLError(f"field {name!r} must map each name to an object")


INDEX = "index.json"  # every profile folder lists its records, so a copy can be fetched file by file


def save_record(record: RunRecord, root: str | os.PathLike | None = None, replace: bool = False) -> Path:
    """Write a record atomically to <root>/<profile>/<scenario>/<tasks>--<model>-<hash>--seed<k>.json
    (root: `results_root()`), replacing an older run with the same key, and update the folder's index.

    In the book's own results folder (results/ of the checkout), a stored record made with another spec
    (`extra["spec_hash"]`) is replaced only with `replace=True` or MTL_REPLACE_RECORDS=1."""
    base = Path(root) if root is not None else results_root()
    root = base / check_folder_name("Profile", record.profile)
    folder = (root / check_folder_name("Scenario", record.scenario)).resolve()
    if root.resolve() not in folder.parents:
        raise MTLError(f"Scenario {record.scenario!r} would write outside the results folder {root}.")
    path = folder / record.file_name()
    if path.exists():
        stored = read_record(path)
        if stored.key != record.key:
            raise MTLError(
                f"The record file {shown_path(path)} holds another run ({stored.key}), not {record.key}; "
                "it is left as it is. Move it away or delete it, then save again."
            )
        replace = replace or os.environ.get(REPLACE_ENV) == "1"
        if not replace and is_book_results(base) and stored.extra.get("spec_hash") != record.extra.get("spec_hash"):
            raise MTLError(
                f"{shown_path(path)} is the book's stored run of {record.scenario!r} (seed {record.seed}), "
                f"made with another spec ({stored.extra.get('spec_hash')} vs "
                f"{record.extra.get('spec_hash')}); it is not replaced. For your own runs set "
                "MTL_RESULTS_DIR to a folder of your own; to regenerate the book's records run "
                f"`make notebooks` (or save_record(..., replace=True), or {REPLACE_ENV}=1)."
            )
    path = write_json_atomic(path, record.to_json())
    write_index(root)
    return path


def write_index(folder: Path) -> Path:
    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.json"))
    return write_json_atomic(folder / INDEX, {"schema": RECORD_SCHEMA, "records": files})


def read_record(path: Path) -> RunRecord:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunRecord.from_json(data)
    except (json.JSONDecodeError, TypeError, ValueError, UnicodeDecodeError, MTLError) as err:
        raise MTLError(
            f"The result record {path} is corrupt ({type(err).__name__}: {err}). Delete it and re-run the "
            "notebook that wrote it."
        ) from err


def load_records(
    profile: str,
    scenario: str | None = None,
    tasks: list[str] | None = None,
    model: str | None = None,
    seeds: list[int] | None = None,
    root: str | os.PathLike | None = None,
) -> list[RunRecord]:
    """Records of one profile, filtered by scenario, tasks, model and seeds, in (scenario, tasks, model,
    seed) order (seed 2 before seed 10); other schemas are skipped."""
    root = (Path(root) if root is not None else results_root()) / check_folder_name("Profile", profile)
    pattern = f"{check_folder_name('Scenario', scenario)}/*.json" if scenario else "*/*.json"
    return read_records(root.glob(pattern), profile, scenario=scenario, tasks=tasks, model=model, seeds=seeds)


def read_records(paths, profile: str, **filters) -> list[RunRecord]:
    records = [read_record(path) for path in paths]
    kept = [r for r in records if r.schema == RECORD_SCHEMA and r.profile == profile and record_matches(r, **filters)]
    return sorted(kept, key=lambda r: (r.scenario, r.task_key, r.model, r.seed))


def check_comparable(records: list[RunRecord]) -> None:
    """Raise unless every record has the same tasks and model (one table must not mix them)."""
    tasks = sorted({r.task_key for r in records})
    models = sorted({r.model for r in records})
    if len(tasks) > 1:
        raise MTLError(
            f"These records were trained on different tasks ({', '.join(tasks)}); compare one task set at a time "
            "(filter with load_records(..., tasks=[...]))."
        )
    if len(models) > 1:
        raise MTLError(
            f"These records come from different models ({', '.join(models)}); compare one model at a time "
            "(filter with load_records(..., model=...))."
        )


def records_frame(records: list[RunRecord], split: str = "validation") -> pd.DataFrame:
    """One row per record: scenario, seed, cost columns and each task's primary metric on `split`."""
    check_comparable(records)
    rows = []
    for r in records:
        row = {
            "scenario": r.scenario,
            "seed": r.seed,
            "trained groups": len(r.trained),
            "trainable params": r.trainable_params,
            "train examples": r.budget.get("examples", 0),
            "train seconds": r.train_seconds,
            "train examples/s": r.train_examples_per_second,
            "inference examples/s": r.inference_examples_per_second,
            "peak memory MB": r.peak_memory_mb,
            "interrupted": r.interrupted,
        }
        for task in r.tasks:
            row[task] = r.metric(task, split)
        rows.append(row)
    return pd.DataFrame(rows)


def record_matches(record: RunRecord, scenario=None, tasks=None, model=None, seeds=None) -> bool:
    return (
        (scenario is None or record.scenario == scenario)
        and (tasks is None or record.task_key == "+".join(sorted(tasks)))
        and (model is None or record.model == model)
        and (seeds is None or record.seed in seeds)
    )
