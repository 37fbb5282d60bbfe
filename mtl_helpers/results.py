"""One record per run (a dataclass), written atomically as strict JSON, keyed by scenario, tasks,
model, profile and seed; collecting records filters on those keys and refuses to mix tasks or models
in one table."""
from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import MTLError

RECORD_SCHEMA = 2
SCENARIO_NAME = re.compile(r"^[a-z0-9][a-z0-9._+=-]{0,95}$")


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


def strict_json(obj):
    """The object with NaN and infinities as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    text = json.dumps(strict_json(obj), indent=1, sort_keys=True, allow_nan=False, default=str)
    return atomic_write_bytes(path, (text + "\n").encode())


def book_root(start: Path | None = None) -> Path | None:
    """The repository root (the folder holding _toc.yml), searched upward from `start` or the cwd."""
    here = (start or Path.cwd()).resolve()
    return next((p for p in [here, *here.parents] if (p / "_toc.yml").exists()), None)


def shown_path(path: Path) -> str:
    """A path as a reader's message shows it: relative to the book's root when inside it (stored
    outputs carry no machine paths), else as given."""
    root = book_root()
    try:
        return str(Path(path).resolve().relative_to(root.resolve())) if root is not None else str(path)
    except ValueError:
        return str(path)


def results_root() -> Path:
    """MTL_RESULTS_DIR if set, else results/ at the repository root (or the cwd); one folder per profile inside."""
    if os.environ.get("MTL_RESULTS_DIR"):
        return Path(os.environ["MTL_RESULTS_DIR"])
    return (book_root() or Path.cwd()) / "results"


def results_dir(profile: str) -> Path:
    return results_root() / profile


def _encode_outcomes(outcomes: np.ndarray):
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
    schema: int = RECORD_SCHEMA

    def __post_init__(self) -> None:
        if not isinstance(self.scenario, str) or not SCENARIO_NAME.match(self.scenario):
            raise MTLError(f"Scenario name {self.scenario!r} is not allowed: use lower-case letters, digits and . _ + = - "
                           "(it becomes a folder name under the results folder, so no slashes or '..').")

    # -- keys
    @property
    def task_key(self) -> str:
        return "+".join(sorted(self.tasks))

    @property
    def key(self) -> tuple:
        return (self.scenario, self.task_key, self.model, self.profile, self.seed)

    def file_name(self) -> str:
        model = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model)
        return f"{self.task_key}--{model}--seed{self.seed}.json"

    # -- reading values
    def metric(self, task: str, split: str = "validation", name: str | None = None) -> float:
        name = name or self.tasks[task]["metric"]
        value = self.metrics.get(split, {}).get(task, {}).get(name)
        return float("nan") if value is None else float(value)

    def mean_metric(self, split: str = "validation") -> float:
        return float(np.mean([self.metric(t, split) for t in self.tasks]))

    def outcome_array(self, task: str, split: str = "validation") -> np.ndarray:
        try:
            return decode_outcomes(self.outcomes[split][task])
        except KeyError:
            raise MTLError(f"Record {self.scenario!r} (seed {self.seed}) holds no outcomes of {task!r} on {split!r}; "
                           f"it has {sorted(self.outcomes)}.") from None

    # -- building
    @classmethod
    def from_trainer(cls, trainer, scenario: str, profile: str, splits: tuple[str, ...], extra: dict) -> "RunRecord":
        from .train import model_label

        metrics, outcomes, inference = {}, {}, []
        for split in splits:
            for task, result in trainer.evaluate_outcomes(split).items():
                metrics.setdefault(split, {})[task] = result.metrics
                outcomes.setdefault(split, {})[task] = _encode_outcomes(result.outcomes)
                inference.append((result.examples, result.seconds))
        examples, seconds = map(sum, zip(*inference)) if inference else (0, 0.0)
        return cls(
            scenario=scenario, profile=profile, seed=trainer.config.seed, model=model_label(trainer.model),
            tasks={n: {"level": t.level, "metric": trainer.primary_metrics[n], "sizes": t.sizes()} for n, t in trainer.tasks.items()},
            device=trainer.device.type,
            budget={"examples": trainer.examples_seen, "steps": trainer.global_step, "epochs": round(trainer.epochs_done, 4)},
            trained=dict(trainer.trained_groups), trainable_params=sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            total_params=sum(p.numel() for p in trainer.model.parameters()), metrics=metrics, outcomes=outcomes,
            train_seconds=round(trainer.train_seconds, 3),
            train_examples_per_second=round(trainer.examples_seen / trainer.train_seconds, 2) if trainer.train_seconds else None,
            inference_examples_per_second=round(examples / seconds, 2) if seconds else None,
            peak_memory_mb=round(trainer.peak_memory_mb, 1) if trainer.memory_method else None, memory_method=trainer.memory_method,
            interrupted=trainer.history.ever_interrupted, config=trainer.config_dict(), extra=dict(extra),
        )

    @classmethod
    def from_outcomes(cls, scenario: str, profile: str, seed: int, model: str, tasks: dict, results: dict, **fields_) -> "RunRecord":
        """A record for a method without a Trainer (e.g. a nearest-centroid classifier): `results` maps
        split -> task -> TaskEvaluation."""
        return cls(
            scenario=scenario, profile=profile, seed=seed, model=model,
            tasks={n: {"level": t.level, "metric": "accuracy" if t.level == "sentence" else "entity_f1", "sizes": t.sizes()} for n, t in tasks.items()},
            metrics={s: {t: r.metrics for t, r in per.items()} for s, per in results.items()},
            outcomes={s: {t: _encode_outcomes(r.outcomes) for t, r in per.items()} for s, per in results.items()},
            **fields_,
        )

    def to_json(self) -> dict:
        # The file's keys are sorted; "task_order" keeps the tasks in training order (task A first) for reading back.
        return {**asdict(self), "task_order": list(self.tasks)}

    @classmethod
    def from_json(cls, data: dict) -> "RunRecord":
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        order = data.get("task_order")
        if isinstance(order, list) and sorted(order) == sorted(record.tasks):
            record.tasks = {t: record.tasks[t] for t in order}
        return record


INDEX = "index.json"  # every profile folder lists its records, so a copy can be fetched file by file


def save_record(record: RunRecord, root: str | os.PathLike | None = None) -> Path:
    """Write a record atomically to <root>/<profile>/<scenario>/<tasks>--<model>--seed<k>.json
    (root: `results_root()`), replacing an older run with the same key, and update the folder's index."""
    root = (Path(root) if root is not None else results_root()) / record.profile
    folder = (root / record.scenario).resolve()
    if root.resolve() not in folder.parents:
        raise MTLError(f"Scenario {record.scenario!r} would write outside the results folder {root}.")
    path = write_json_atomic(folder / record.file_name(), record.to_json())
    write_index(root)
    return path


def write_index(folder: Path) -> Path:
    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*.json"))
    return write_json_atomic(folder / INDEX, {"schema": RECORD_SCHEMA, "records": files})


def read_record(path: Path) -> RunRecord:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunRecord.from_json(data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError, MTLError) as err:
        raise MTLError(f"The result record {path} is corrupt ({type(err).__name__}: {err}). Delete it and re-run the "
                       "notebook that wrote it.") from err


def load_records(profile: str, scenario: str | None = None, tasks: list[str] | None = None, model: str | None = None,
                 seeds: list[int] | None = None, root: str | os.PathLike | None = None) -> list[RunRecord]:
    """Records of one profile, filtered by scenario, tasks, model and seeds; other schemas are skipped."""
    root = (Path(root) if root is not None else results_root()) / profile
    pattern = f"{scenario}/*.json" if scenario else "*/*.json"
    out = []
    for path in sorted(root.glob(pattern)):
        record = read_record(path)
        if record.schema != RECORD_SCHEMA or record.profile != profile:
            continue
        if tasks is not None and record.task_key != "+".join(sorted(tasks)):
            continue
        if model is not None and record.model != model:
            continue
        if seeds is not None and record.seed not in seeds:
            continue
        out.append(record)
    return out


def check_comparable(records: list[RunRecord]) -> None:
    """Raise unless every record has the same tasks and model (one table must not mix them)."""
    tasks = sorted({r.task_key for r in records})
    models = sorted({r.model for r in records})
    if len(tasks) > 1:
        raise MTLError(f"These records were trained on different tasks ({', '.join(tasks)}); compare one task set at a time "
                       "(filter with load_records(..., tasks=[...])).")
    if len(models) > 1:
        raise MTLError(f"These records come from different models ({', '.join(models)}); compare one model at a time "
                       "(filter with load_records(..., model=...)).")


def records_frame(records: list[RunRecord], split: str = "validation") -> pd.DataFrame:
    """One row per record: scenario, seed, cost columns and each task's primary metric on `split`."""
    check_comparable(records)
    rows = []
    for r in records:
        row = {"scenario": r.scenario, "seed": r.seed, "trained groups": len(r.trained), "trainable params": r.trainable_params,
               "train examples": r.budget.get("examples", 0), "train seconds": r.train_seconds,
               "train examples/s": r.train_examples_per_second, "inference examples/s": r.inference_examples_per_second,
               "peak memory MB": r.peak_memory_mb, "interrupted": r.interrupted}
        for task in r.tasks:
            row[task] = r.metric(task, split)
        rows.append(row)
    return pd.DataFrame(rows)


def glue(name: str, value, display: bool = False) -> None:
    """Store a value for the book's {glue} references (myst-nb); a no-op where myst-nb is missing."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # e.g. on Colab, where the book toolchain is not installed
        return
    if isinstance(value, np.generic):
        value = value.item()
    myst_glue(name, value, display=display)


def _download(url: str) -> bytes:
    from urllib.request import urlopen

    with urlopen(url, timeout=30) as response:  # noqa: S310 - a fixed https URL of the book's repository
        return response.read()


def stored_records(profile: str, repository_url: str, branch: str = "main", cache: str | os.PathLike | None = None,
                   fetch=_download) -> tuple[list[RunRecord], str]:
    """The book's own stored records of `profile`: from the repository checkout when this runs inside
    one, else fetched from the repository on GitHub (index first, then each record) into `cache`.
    Returns the records and where they came from; none (and the reason) when neither is reachable."""
    root = book_root()
    if root is not None and (root / "results" / profile).is_dir():
        return load_records(profile, root=root / "results"), f"the book's stored records in results/{profile}"
    owner_repo = repository_url.rstrip("/").split("github.com/")[-1]
    raw = f"https://raw.githubusercontent.com/{owner_repo}/{branch}/results/{profile}"
    cache = Path(cache) if cache is not None else Path.home() / ".cache" / "mtl_helpers" / "results"
    try:
        index = json.loads(fetch(f"{raw}/{INDEX}"))
        for name in index["records"]:
            target = cache / profile / name
            if not target.exists():
                atomic_write_bytes(target, fetch(f"{raw}/{name}"))
    except (OSError, ValueError, KeyError) as err:
        return [], f"no stored records: {raw} could not be read ({type(err).__name__})"
    return load_records(profile, root=cache), f"the book's stored records, fetched from {raw}"


def collect_records(profile: str, repository_url: str, **filters) -> tuple[list[RunRecord], list[str]]:
    """The reader's own records of `profile` combined with the book's stored ones (own runs replace
    stored runs with the same key), filtered like `load_records`; and a line per source."""
    own = load_records(profile, **filters)
    stored, where = stored_records(profile, repository_url)
    if stored and results_dir(profile).resolve() == (book_root() or Path("/nonexistent")).resolve() / "results" / profile:
        stored = []  # the reader's results folder is the book's own: nothing to add
    keys = {r.key for r in own}
    filtered = [r for r in stored if r.key not in keys and _matches(r, **filters)]
    lines = [f"{len(own)} record(s) from your runs in {shown_path(results_dir(profile))}"]
    if filtered or not own:
        lines.append(f"{len(filtered)} record(s) from {where}")
    return own + filtered, lines


def _matches(record: RunRecord, scenario=None, tasks=None, model=None, seeds=None) -> bool:
    return ((scenario is None or record.scenario == scenario) and (tasks is None or record.task_key == "+".join(sorted(tasks)))
            and (model is None or record.model == model) and (seeds is None or record.seed in seeds))
