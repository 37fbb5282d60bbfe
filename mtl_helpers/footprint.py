"""What an arm costs in memory and on disk, from the model alone: trainable parameters, the gradients
and AdamW state they bring, and the bytes to store per task (its head and whatever the run changed
in the encoder) against the bytes of a whole model per task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from .adapter_layout import adapter_parameters

if TYPE_CHECKING:
    from .model import MultiTaskModel

ADAMW_STATES = 2  # exp_avg and exp_avg_sq, one value each per trainable parameter, in the parameter's dtype
MB = 2**20


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def memory_facts(model: MultiTaskModel) -> dict:
    """Counts and bytes of one model as it would train now (`requires_grad` decides what trains).

    * trainable_params, total_params: as RunRecord counts them (adapters included);
    * gradient_bytes: one value per trainable parameter; optimizer_state_bytes: AdamW's two;
    * task_bytes: per task, what serving it needs beyond the pretrained checkpoint everyone shares:
      its head and every trainable encoder tensor its forward uses (the whole encoder for full
      fine-tuning, the biases for BitFit, the adapter for LoRA: with one adapter per task, its own);
    * whole_model_bytes: the encoder and one head, what a fully fine-tuned copy per task stores.
    """
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    adapters = adapter_parameters(model.encoder)
    own_adapter = dict(model.task_adapters)
    encoder_params = dict(model.encoder.named_parameters())
    task_bytes = {}
    for task, head in model.heads.items():
        mine = own_adapter.get(task)
        used = [
            p
            for name, p in encoder_params.items()
            if p.requires_grad and (name not in adapters or not own_adapter or adapters[name][1] == mine)
        ]
        task_bytes[task] = _bytes(used) + _bytes(p for p in head.parameters() if p.requires_grad)
    mean_head = sum(_bytes(h.parameters()) for h in model.heads.values()) / len(model.heads)
    base = _bytes(p for n, p in encoder_params.items() if n not in adapters)
    return {
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in params),
        "gradient_bytes": _bytes(trainable),
        "optimizer_state_bytes": ADAMW_STATES * _bytes(trainable),
        "task_bytes": task_bytes,
        "whole_model_bytes": int(base + mean_head),
    }


def memory_table(arms: Mapping[str, MultiTaskModel]) -> pd.DataFrame:
    """One row per arm (name -> model, set up as it trains): trainable parameters (count and share),
    gradient and AdamW-state megabytes, megabytes stored per task (mean over tasks) and the whole
    model's, and how many per-task stores fit in one whole model."""
    rows = []
    for arm, model in arms.items():
        facts = memory_facts(model)
        per_task = sum(facts["task_bytes"].values()) / len(facts["task_bytes"])
        rows.append(
            {
                "arm": arm,
                "trainable params": facts["trainable_params"],
                "trainable %": 100 * facts["trainable_params"] / facts["total_params"],
                "gradients MB": facts["gradient_bytes"] / MB,
                "AdamW state MB": facts["optimizer_state_bytes"] / MB,
                "stored per task MB": per_task / MB,
                "whole model MB": facts["whole_model_bytes"] / MB,
                "whole model / per task": facts["whole_model_bytes"] / per_task if per_task else float("inf"),
            }
        )
    return pd.DataFrame(rows).set_index("arm")


__all__ = ["ADAMW_STATES", "memory_facts", "memory_table"]
