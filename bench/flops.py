"""Analytic model FLOPs of a BERT-style encoder and the machine's matmul reference.

Per token and layer (hidden d, feed-forward f, padded sequence length L), counting a
multiply-add as 2 FLOPs and ignoring softmax, LayerNorm, GELU and biases:

    forward  = 2 * (4 d^2 + 2 d f)   [Q, K, V, O and the two FFN matrices: 2 * layer weights]
             + 4 L d                  [Q K^T and attention x V]
    backward = 2 * forward            (only for trainable layers and every layer above them)

A step's model FLOPs = tokens * (sum over layers of forward + backward where it applies)
+ the heads (2 d C per example forward, x3 with backward). Tokens are the padded tokens
(batch x padded length): the work the machine actually does. Embedding look-ups are free.
Frozen layers below the lowest trainable one count only their forward; when the whole
backbone is frozen, only the heads get a backward.
"""

from __future__ import annotations

import torch
from torch.utils import benchmark

from .machine import cpu_flags, native_bf16


def layer_forward_flops_per_token(hidden: int, intermediate: int, seq_len: float) -> float:
    return 2.0 * (4 * hidden * hidden + 2 * hidden * intermediate) + 4.0 * seq_len * hidden


def encoder_dims(config) -> tuple[int, int, int]:
    """(hidden, intermediate, layers) of a Hugging Face BERT-like config."""
    return int(config.hidden_size), int(config.intermediate_size), int(config.num_hidden_layers)


def step_flops(
    config,
    batch_size: int,
    padded_len: float,
    trainable_layers: int,
    head_classes: int = 2,
    backbone: bool = True,
) -> float:
    """Model FLOPs of one training step: forward of all layers, backward of the top `trainable_layers`.

    trainable_layers = layers (full fine-tuning), k (top-k), 0 (heads only). backbone=False: cached
    features, only the head runs.
    """
    hidden, inter, layers = encoder_dims(config)
    if not 0 <= trainable_layers <= layers:
        raise ValueError(f"trainable_layers must be in 0..{layers}, got {trainable_layers}")
    head = 2.0 * hidden * head_classes * batch_size * 3  # forward + backward of the linear head
    if not backbone:
        return head
    tokens = batch_size * padded_len
    per_layer = layer_forward_flops_per_token(hidden, inter, padded_len) * tokens
    return per_layer * layers + 2 * per_layer * trainable_layers + head


def forward_flops(config, batch_size: int, padded_len: float) -> float:
    """Inference FLOPs of the encoder for one batch (no head)."""
    hidden, inter, layers = encoder_dims(config)
    return layer_forward_flops_per_token(hidden, inter, padded_len) * batch_size * padded_len * layers


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere torch emulates it, slowly
    (a bf16 product at n = 2048 ran for minutes on an AVX2-only machine), so the suite skips it there."""
    return native_bf16(cpu_flags())


def _timed_matmul(a: torch.Tensor, b: torch.Tensor, min_run_time: float = 0.2) -> float:
    """Median seconds of one a @ b, from torch.utils.benchmark's Timer (it synchronises CUDA itself
    and repeats the product in blocks until `min_run_time` has passed)."""
    timer = benchmark.Timer(stmt="torch.matmul(a, b)", globals={"torch": torch, "a": a, "b": b})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def matmul_flops(
    sizes=(1024, 2048), dtypes=("fp32", "bf16"), reps: int = 5, warmup: int = 2, device: str = "cpu"
) -> dict:
    """Median FLOP/s of torch.matmul of n x n matrices per dtype and size on `device`; 'best' per dtype.

    On CUDA the device is synchronised after the warm-up and each timed product is bracketed by CUDA
    events; fp32 there follows torch's float32 matmul precision (TF32 when set to "high"), recorded
    as `fp32_matmul_precision`.
    """
    out: dict = {"device": str(device)}
    names = {"fp32": torch.float32, "bf16": torch.bfloat16}
    skipped = [n for n in dtypes if n == "bf16" and str(device).startswith("cpu") and not cpu_has_native_bf16()]
    for name in [n for n in dtypes if n not in skipped]:
        per_size = {}
        for n in sizes:
            a = torch.randn(n, n, device=device).to(names[name])
            b = torch.randn(n, n, device=device).to(names[name])
            for _ in range(warmup):
                torch.matmul(a, b)
            per_size[str(n)] = 2.0 * n**3 / _timed_matmul(a, b, min_run_time=0.1 * reps)  # reps: 0.1 s of runs each
            del a, b
        out[name] = {"by_size": per_size, "best": max(per_size.values())}
    if skipped:
        out["skipped"] = {n: "this CPU has no native bf16 (AVX512-BF16 or AMX)" for n in skipped}
    out["fp32_matmul_precision"] = torch.get_float32_matmul_precision()
    return out
