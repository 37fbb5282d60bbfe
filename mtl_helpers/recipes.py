"""Named ways to train the multi-task model (recipes), so that every chapter that needs, say, full
fine-tuning at a given rate runs exactly the same thing and can reuse the other chapters' runs.

A `Recipe` holds everything a run depends on except the seed and the data; `run_recipe` trains it
once per seed (reusing stored runs with the same spec) and returns the records.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
from transformers import AutoModel

from .adapters import add_lora, add_task_adapters, bitfit, check_lora_settings
from .callbacks import BestWeights, GradualUnfreezing, History, ulmfit_stages
from .tasks import TaskData, same_labels
from .encoder import DEFAULT_MODEL_ID, book_precision, load_encoder, pick_device, truncate_encoder
from .errors import MTLError
from .evaluation import TaskEvaluation, score_task
from .runs import run_seeds
from .groups import train_only
from .model import MultiTaskModel
from .profiles import Profile
from .records import RunRecord, encode_outcomes, examples_digest
from .train import Trainer, TrainConfig


@dataclass(frozen=True)
class Recipe:
    """What is trained, at which rates, for how long. `train` names the groups trainable from the
    start ("all", "heads", "layer.5", ...); `lp_epochs` > 0 trains the heads alone first (LP-FT);
    `gradual` = number of ULMFiT stages (heads, then the backbone from the top in chunks), which
    share `epochs` equally, each a new slanted cycle with the top rate scaled by `stage_scales`.

    `adapter` freezes every pretrained weight and trains an addition besides the heads (which `train`
    must then name alone): "lora" (rank `lora_rank`, default 8; `lora_alpha`, default 16; `lora_scope`
    "attention" (default) or "all-linear"; `lora_layers`: only the top k layers; `lora_dropout`,
    default 0.0; `lora_per_task`: one adapter per task), or "bitfit" (the encoder's biases). The
    adapters learn at the backbone's rates by depth (`backbone_lr`, `factor`). Unset, these fields
    stay out of `spec`, so the fingerprints of runs stored before they existed do not change.

    `restore_best` scores validation every `eval_every` epochs (1 when unset) and, when the fit ends,
    restores the weights of the evaluation with the best mean validation score (`BestWeights`): the
    best checkpoint, chosen on validation; the record keeps when it was (`extra["best"]`). Its
    `budget["steps"]` still counts every step taken. Named in `spec` only when on."""

    train: tuple[str, ...] = ("all",)
    head_lr: float = 1e-3
    backbone_lr: float | None = None
    factor: float = 1.0
    epochs: float = 2.0
    batch_size: int = 16
    schedule: str = "slanted"
    cache_features: bool = False
    cache_frozen_layers: bool = False
    lp_epochs: float = 0.0
    gradual: int = 0
    stage_scales: tuple[float, ...] | None = None
    eval_every: float | None = None
    eval_train: bool = False
    model_name: str | None = None
    n_layers: int | None = None
    pretrained: bool = True
    extra: tuple[tuple[str, object], ...] = field(default_factory=tuple)
    adapter: str | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_scope: str | None = None
    lora_layers: int | None = None
    lora_dropout: float | None = None
    lora_per_task: bool = False
    restore_best: bool = False

    def __post_init__(self) -> None:
        """Refuse schedules of what trains when that contradict each other, before any training."""
        number = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        if not (number(self.epochs) and self.epochs > 0):
            raise MTLError(f"Recipe(epochs={self.epochs!r}): epochs must be a finite number > 0.")
        if not (number(self.lp_epochs) and 0 <= self.lp_epochs < self.epochs):
            raise MTLError(
                f"Recipe(lp_epochs={self.lp_epochs!r}, epochs={self.epochs!r}): lp_epochs (the heads-only "
                "part) must lie in [0, epochs), as it is part of the run's epochs; lower lp_epochs or "
                "raise epochs."
            )
        if isinstance(self.gradual, bool) or not isinstance(self.gradual, int) or self.gradual == 1 or self.gradual < 0:
            raise MTLError(
                f"Recipe(gradual={self.gradual!r}): gradual is the number of ULMFiT stages, 0 (none) or an "
                "integer >= 2 (the heads, then the backbone in gradual - 1 chunks)."
            )
        if self.lp_epochs and self.gradual:
            raise MTLError(
                f"Recipe(lp_epochs={self.lp_epochs!r}, gradual={self.gradual!r}): LP-FT and gradual "
                "unfreezing each decide when the backbone joins, so they cannot be combined; set "
                "lp_epochs=0 (gradual unfreezing's first stage already trains the heads alone) or "
                "gradual=0."
            )
        if self.stage_scales is not None and len(self.stage_scales) != self.gradual:
            raise MTLError(
                f"Recipe(stage_scales={self.stage_scales!r}, gradual={self.gradual!r}): stage_scales "
                "needs one rate scale per gradual-unfreezing stage; give gradual scales, or "
                "stage_scales=None."
            )
        if self.restore_best and (self.lp_epochs or not isinstance(self.restore_best, bool)):
            raise MTLError(
                f"Recipe(restore_best={self.restore_best!r}, lp_epochs={self.lp_epochs!r}): restore_best is "
                "True or False, and keeps the best weights of a single fit, so not with LP-FT's two fits "
                "(lp_epochs > 0)."
            )
        self._check_adapter()

    def _check_adapter(self) -> None:
        """Refuse adapter settings that contradict each other; fill LoRA's defaults, so that the spec
        names the values the run used."""
        lora = {f: getattr(self, f) for f in ADAPTER_FIELDS if f.startswith("lora_") and _is_set(getattr(self, f))}
        if self.adapter not in (None, "lora", "bitfit"):
            raise MTLError(f"Recipe(adapter={self.adapter!r}): adapter is None, 'lora' or 'bitfit'.")
        if lora and self.adapter != "lora":
            settings = ", ".join(f"{k}={v!r}" for k, v in lora.items())
            raise MTLError(
                f"Recipe({settings}, adapter={self.adapter!r}): LoRA settings need adapter='lora'; set it, "
                "or leave the lora_* fields unset."
            )
        if self.adapter is None:
            return
        if tuple(self.train) != ("heads",):
            raise MTLError(
                f"Recipe(adapter={self.adapter!r}, train={self.train!r}): an adapter run freezes every "
                "pretrained weight and trains the adapter besides the heads, so train must be ('heads',)."
            )
        for name, value, why in (
            ("lp_epochs", self.lp_epochs, "the heads and the adapter train together from the start"),
            ("gradual", self.gradual, "gradual unfreezing would unfreeze pretrained layers"),
            ("cache_features", self.cache_features, "the encoder's output changes as the adapter trains"),
        ):
            if value:
                raise MTLError(f"Recipe(adapter={self.adapter!r}, {name}={value!r}): not with an adapter, as {why}.")
        if self.adapter == "lora":
            for name, default in (
                ("lora_rank", 8),
                ("lora_alpha", 16),
                ("lora_scope", "attention"),
                ("lora_dropout", 0.0),
            ):
                if getattr(self, name) is None:
                    object.__setattr__(self, name, default)
            check_lora_settings(self.lora_rank, self.lora_alpha, self.lora_scope, self.lora_layers, self.lora_dropout)

    def with_(self, **changes) -> "Recipe":
        return replace(self, **changes)

    def spec(self, tasks: Sequence[TaskData], ood: Sequence[tuple[str, TaskData]] = ()) -> dict:
        # "task_order": the hash sorts mapping keys, and training task A first differs from training task B first
        recipe = asdict(self)
        if not self.cache_frozen_layers:  # named only when on: earlier recipes keep their specs and stored runs
            del recipe["cache_frozen_layers"]
        if not self.restore_best:  # the same
            del recipe["restore_best"]
        for name in ADAPTER_FIELDS:  # only when set: the runs stored before these fields keep their fingerprints
            if not _is_set(recipe[name]):
                del recipe[name]
        return {
            "recipe": recipe,
            "tasks": {t.name: t.sizes() for t in tasks},
            "task_order": [t.name for t in tasks],
            "ood": [(head, t.name, t.sizes().get("test")) for head, t in ood],
        }


ADAPTER_FIELDS = (
    "adapter",
    "lora_rank",
    "lora_alpha",
    "lora_scope",
    "lora_layers",
    "lora_dropout",
    "lora_per_task",
)


def _is_set(value: object) -> bool:
    return value is not None and value is not False


@functools.lru_cache(maxsize=2)
def _pristine(model_name: str | None):
    return load_encoder(model_name)


def fresh_encoder(recipe: Recipe, seed: int):
    """A new copy of the pretrained encoder (loaded once per process), or the same architecture with
    random weights drawn from `seed`, optionally cut to its lower `n_layers` layers."""
    encoder, tokenizer = _pristine(recipe.model_name)
    if recipe.pretrained:
        encoder = copy.deepcopy(encoder)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = AutoModel.from_config(copy.deepcopy(encoder.config))
        encoder.config.mtl_random_init = True
    if recipe.n_layers is not None:
        encoder = truncate_encoder(encoder, recipe.n_layers)
    return encoder, tokenizer


def build_trainer(recipe: Recipe, tasks: Sequence[TaskData], seed: int, profile: Profile, **config) -> Trainer:
    """The model (fresh backbone, heads from `seed`) and its trainer, with `recipe.train` trainable, and
    the recipe's adapter (its weights drawn from `seed`)."""
    encoder, tokenizer = fresh_encoder(recipe, seed)
    model = MultiTaskModel.for_tasks(encoder, tasks, seed=seed)
    first = ("heads",) if (recipe.lp_epochs or recipe.gradual) else recipe.train
    train_only(model, *first)
    if recipe.adapter == "lora":
        lora = dict(scope=recipe.lora_scope, layers=recipe.lora_layers, dropout=recipe.lora_dropout, seed=seed)
        if recipe.lora_per_task:
            add_task_adapters(model, recipe.lora_rank, recipe.lora_alpha, **lora)
        else:
            add_lora(model, recipe.lora_rank, recipe.lora_alpha, **lora)
    elif recipe.adapter == "bitfit":
        bitfit(model)
    settings = dict(
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        eval_batch_size=profile.eval_batch_size,
        lr=recipe.head_lr,
        backbone_lr=recipe.backbone_lr,
        factor=recipe.factor,
        schedule=recipe.schedule,
        cache_features=recipe.cache_features,
        cache_frozen_layers=recipe.cache_frozen_layers,
        eval_every=recipe.eval_every,
        eval_train=recipe.eval_train,
        seed=seed,
        progress=False,
    )
    settings.update(config)
    # bf16 autocast where this machine computes it natively, else fp32; the record keeps which (config)
    settings.setdefault("precision", book_precision(pick_device(settings.get("device", "auto"))))
    callbacks = []
    if recipe.restore_best:
        settings["eval_every"] = recipe.eval_every or 1.0
        callbacks.append(BestWeights())
    if recipe.gradual:
        stages = ulmfit_stages(model, recipe.gradual, recipe.epochs / recipe.gradual, recipe.stage_scales)
        callbacks.append(GradualUnfreezing(stages))
    return Trainer(model, tokenizer, tasks, TrainConfig(**settings), callbacks=callbacks)


def train_recipe(recipe: Recipe, tasks: Sequence[TaskData], seed: int, profile: Profile, **config) -> Trainer:
    """Build and train: heads first when `lp_epochs` (then everything in `train`), else one fit."""
    trainer = build_trainer(recipe, tasks, seed, profile, **config)
    if recipe.lp_epochs:  # Recipe checked 0 < lp_epochs < epochs, and no gradual unfreezing alongside
        trainer.fit(recipe.lp_epochs, stage="heads")
        trainer.unfreeze(*recipe.train)
        trainer.fit(recipe.epochs - recipe.lp_epochs, stage="+" + ",".join(recipe.train))
    else:
        trainer.fit(recipe.epochs)
    return trainer


def evaluate_transfer(trainer: Trainer, head: str, data: TaskData, split: str = "test") -> TaskEvaluation:
    """Score the head of task `head` on another data set with the same labels (e.g. SST-2's head on
    Rotten Tomatoes): out-of-distribution evaluation without training on it, tokenized and scored as
    the trainer scores its own tasks (its max_length, padding, precision, device and eval batch size)."""
    if not same_labels(data.spec, trainer.tasks[head].spec):  # the registry says what each label means
        raise MTLError(
            f"{data.name}'s labels {data.label_names} differ from {head}'s "
            f"{trainer.tasks[head].label_names}; a head can only be scored on data with its own labels."
        )
    config = trainer.config
    return score_task(
        trainer.model,
        trainer.tokenizer,
        replace_name(data, head),
        split,
        batch_size=config.eval_batch_size,
        max_length=config.max_length,
        padding=config.padding,
        precision=config.precision,
        device=trainer.device,
        cache_frozen_layers=config.cache_frozen_layers,
    )


def replace_name(task: TaskData, name: str) -> TaskData:
    """A shallow copy of `task` under another name (its data shared): how the head `name` reads it."""
    clone = copy.copy(task)
    clone.name = name
    return clone


def score_ood(record: RunRecord, trainer: Trainer, ood: Sequence[tuple[str, TaskData]]) -> RunRecord:
    """For every (head, data) in `ood`, the head's score on that data's test split, stored in `record`
    under the split name "ood:<data name>" (metrics, per-example outcomes and the digest of the rows, so
    `compare` works)."""
    for head, data in ood:
        result = evaluate_transfer(trainer, head, data)
        record.metrics.setdefault(f"ood:{data.name}", {})[head] = result.metrics
        record.outcomes.setdefault(f"ood:{data.name}", {})[head] = encode_outcomes(result.outcomes)
        record.examples.setdefault(f"ood:{data.name}", {})[head] = examples_digest(data.splits["test"])
    return record


def rate_history(record: RunRecord) -> History:
    """A History holding the per-step learning rates of a run made with `run_recipe(..., keep_rates=True)`,
    for `plots.plot_lr_groups`."""
    if "rates" not in record.extra:
        raise MTLError(
            f"Record {record.scenario!r} (seed {record.seed}) kept no learning rates; run it with "
            "run_recipe(..., keep_rates=True)."
        )
    return History.from_steps(
        [
            {"step": r["step"], "stage": r.get("stage", ""), "loss": float("nan"), "lr": dict(r["lr"])}
            for r in record.extra["rates"]
        ]
    )


def run_recipe(
    scenario: str,
    recipe: Recipe,
    tasks: Sequence[TaskData],
    seeds: Sequence[int],
    profile: Profile,
    splits: Sequence[str] = ("validation",),
    ood: Sequence[tuple[str, TaskData]] = (),
    keep_rates: bool = False,
    **extra,
) -> list[RunRecord]:
    """`recipe` trained once per seed (stored runs with the same spec are reused); each record holds
    `splits`, and for every (head, data) in `ood` the head's score on that data's test split under the
    split name "ood:<data name>". With `keep_rates`, each record also keeps every optimizer group's
    learning rate at every step (`extra["rates"]`; `rate_history(record)` reads them back)."""

    def train(seed: int) -> RunRecord:
        trainer = train_recipe(recipe, tasks, seed, profile)
        record = trainer.result(scenario, profile.name, splits, **dict(recipe.extra))
        score_ood(record, trainer, ood)
        if recipe.eval_every is not None or recipe.restore_best:
            record.extra["evals"] = trainer.history.evals
        if recipe.restore_best:
            [keeper] = [c for c in trainer.callbacks if isinstance(c, BestWeights)]
            record.extra["best"] = keeper.best
        if keep_rates:
            record.extra["rates"] = [
                {"step": s["step"], "stage": s["stage"], "lr": s["lr"]} for s in trainer.history.steps
            ]
        if not recipe.pretrained:
            record.model = f"{record.model} (random init)"
        return record

    spec = recipe.spec(tasks, ood)
    # a run in another precision is another run: never reused for this machine's choice
    spec["precision"] = book_precision(pick_device("auto"))
    if keep_rates:  # a stored run without the rates must not be reused
        spec["keep_rates"] = True
    return run_seeds(scenario, train, seeds, profile, spec, splits=splits, **extra)


__all__ = [
    "DEFAULT_MODEL_ID",
    "Recipe",
    "build_trainer",
    "evaluate_transfer",
    "fresh_encoder",
    "rate_history",
    "run_recipe",
    "score_ood",
    "train_recipe",
]
