"""mtl_helpers: the small package behind the book "Freeze or Fine-tune"."""
import warnings

# transformers imports tqdm.auto, which warns (with its file path) when ipywidgets is missing;
# the package's own bars are plain text, so the warning is noise in every notebook.
warnings.filterwarnings("ignore", message="IProgress not found")

from transformers import set_seed  # noqa: E402

from .data import TASKS, TaskData, find_data_dir, load_task, task_schedule
from .encoder import DEFAULT_MODEL_ID, default_model_path, load_encoder, mean_pool
from .errors import (
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
from .groups import (
    assert_frozen_unchanged,
    changed_groups,
    count_trainable,
    freeze,
    layer_groups,
    snapshot,
    top_groups,
    train_only,
    trainable_summary,
    unfreeze,
)
from .model import MultiTaskModel, SentenceHead, TokenHead
from .optim import (
    audit_optimizer,
    discriminative_param_groups,
    discriminative_rates,
    gradual_unfreezing_stages,
    slanted_triangular,
)
from .profiles import PROFILES, get_profile
from .results import accuracy_margin, glue, load_results, results_table, save_result
from .train import PRIMARY_METRIC, History, Trainer, TrainConfig, embed_texts

__version__ = "0.1.0"
