"""mtl_helpers: the small package behind the book "Freeze or Fine-tune".

The modules, bottom to top: the data (`tasks` the registry, `leakage` shared text between splits,
`splits` forming them, `loading` reading them), batches and the model (`batches`, `encoder`,
`model`, `groups`, `training_modes`, `optim`, `layer_cache`), training (`config`, `train`, `callbacks`,
`evaluation`, `features`, `distill`), adapters (`adapters`: LoRA through peft and BitFit;
`adapter_layout`: where peft puts them; `footprint`: what an arm costs in memory), runs and their
records (`records`, `jsonio`, `locations`, `fetch`, `glue`, `stats`), and the book's experiments
(`runs`: an arm over seeds; `recipes`: named ways to train; `arms`: the shared arms the chapters reuse;
`phase2`: chapter 4's Task B alone on new rows, which chapter 11 repeats with adapters; `sweeps`: grids
that extend past their edges; `verdicts`: decided on test, with their scale; `shift`: how far an
out-of-distribution set is; `baselines`: TF-IDF + logistic regression, without pretraining;
`layer_probe`: a linear probe on every layer; `logreg`: the choice of C both share).
"""

__version__ = "0.3.0"  # the one place the version is written (pyproject.toml reads it)

import warnings

# transformers imports tqdm.auto, which warns (with its file path) when ipywidgets is missing;
# the package's own bars are plain text, so the warning is noise in every notebook.
warnings.filterwarnings("ignore", message="IProgress not found")

from transformers import set_seed  # noqa: E402

from .batches import TokenizedTasks, encode_rows, make_collator, make_loader, multitask_stream, task_schedule  # noqa: E402
from .callbacks import (  # noqa: E402
    BestWeights,
    Callback,
    Evaluation,
    GradualUnfreezing,
    History,
    PeakMemory,
    ProgressBar,
    Stage,
    ulmfit_stages,
)
from .leakage import normalize_text, split_overlap  # noqa: E402
from .loading import load_task, split_table  # noqa: E402
from .sources import find_data_dir  # noqa: E402
from .config import TrainConfig  # noqa: E402
from .encoder import (  # noqa: E402
    DEFAULT_MODEL_ID,
    default_model_path,
    load_encoder,
    mean_pool,
    model_label,
    pick_device,
    truncate_encoder,
)
from .errors import (  # noqa: E402
    DataError,
    FrozenParameterChanged,
    ModelLoadError,
    MTLError,
    OptimizerAuditError,
    TrainingDiverged,
    UnknownGroupError,
    UnknownTaskError,
    UnsupportedEncoderError,
)
from .evaluation import PRIMARY_METRIC, TaskEvaluation, evaluate_task, score_task  # noqa: E402
from .recipes import Recipe, run_recipe, train_recipe  # noqa: E402
from .features import FeatureCache, embed_rows, embed_texts  # noqa: E402
from .layer_cache import LayerCache  # noqa: E402
from .audit import assert_frozen_unchanged, changed_groups, snapshot  # noqa: E402
from .adapters import add_lora, add_task_adapters, bitfit, lora_targets, merge_lora, use_adapter  # noqa: E402
from .footprint import memory_facts, memory_table  # noqa: E402
from .groups import freeze, layer_groups, top_groups, train_only, unfreeze  # noqa: E402
from .training_modes import trainable_summary  # noqa: E402
from .model import MultiTaskModel, SentenceHead, TokenHead  # noqa: E402
from .optim import (  # noqa: E402
    DEFAULT_FACTOR,
    ULMFIT_FACTOR,
    ULMFIT_SPREAD,
    RateSchedule,
    audit_optimizer,
    discriminative_param_groups,
    discriminative_rates,
    fused_adamw,
    gradual_unfreezing_stages,
    slanted_triangular,
    spread_factor,
)
from .params import (  # noqa: E402
    ParameterError,
    check_number,
    check_numbers,
    check_rate,
    check_rates,
    check_sizes,
    check_task,
    check_task_pair,
)
from .tasks import TASKS, TaskData  # noqa: E402
from .profiles import PROFILES, Profile, get_profile  # noqa: E402
from .records import RunRecord, check_comparable, load_records, records_frame, save_record  # noqa: E402
from .runs import chosen_value, run_seeds, sweep_table  # noqa: E402
from .glue import glue  # noqa: E402
from .stats import MARGIN, RULE, Comparison, compare, summarize  # noqa: E402
from .state import StepRecord, TrainerState  # noqa: E402
from .train import Trainer  # noqa: E402
from .baselines import tfidf_baseline  # noqa: E402
from .layer_probe import layer_probe  # noqa: E402
