"""The book's figures: learning curves, learning rate per group, trainable parameters, heatmaps."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .callbacks import History


def plot_learning_curves(history: History, metric: str = "accuracy", title: str = "Learning curves", ax=None):
    """Train (dashed) and validation (solid) `metric` per task against epochs."""
    frame = history.frame()
    ax = ax or plt.subplots(figsize=(6.5, 3.8))[1]
    for (task, split), part in frame.groupby(["task", "split"]):
        if metric in part and part[metric].notna().any():
            ax.plot(part["epoch"], part[metric], marker="o", linestyle="--" if split == "train" else "-", label=f"{task} ({split})")
    ax.set(title=title, xlabel="epoch", ylabel=metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_losses(history: History, window: int = 20, title: str = "Training loss", ax=None):
    """Per-task training loss per step, smoothed by a moving average of `window` steps."""
    steps = history.step_frame()
    ax = ax or plt.subplots(figsize=(6.5, 3.5))[1]
    for task, part in steps.groupby("task"):
        ax.plot(part["step"], part["loss"].rolling(window, min_periods=1).mean(), label=task)
    ax.set(title=title, xlabel="optimizer step", ylabel="cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_lr_groups(history: History, title: str = "Learning rate per layer group", ax=None):
    """Learning rate of each optimizer group over the steps (log scale); no-decay twins are hidden."""
    lrs = history.lr_frame()
    lrs = lrs[[c for c in lrs.columns if not str(c).endswith("/no_decay")]]
    ax = ax or plt.subplots(figsize=(7, 4))[1]
    colors = plt.cm.viridis(np.linspace(0, 0.95, len(lrs.columns)))
    for color, column in zip(colors, lrs.columns):
        ax.plot(lrs.index, lrs[column], color=color, label=column)
    ax.set_yscale("log")
    ax.set(title=title, xlabel="optimizer step", ylabel="learning rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_trainable(summary: pd.DataFrame, title: str = "Parameters per layer group", ax=None):
    """Horizontal bars of parameters per group (bottom group at the bottom), trainable vs frozen."""
    ax = ax or plt.subplots(figsize=(6.5, 0.3 * len(summary) + 1.2))[1]
    y = np.arange(len(summary))
    frozen = summary["parameters"] - summary["trainable"]
    ax.barh(y, summary["trainable"] / 1e6, color="tab:orange", label="trainable")
    ax.barh(y, frozen / 1e6, left=summary["trainable"] / 1e6, color="tab:blue", alpha=0.6, label="frozen")
    ax.set_yticks(y, summary.index)
    ax.set(title=title, xlabel="parameters (millions)")
    ax.legend(fontsize=8)
    return ax


def plot_heatmap(matrix: np.ndarray, labels: Sequence[str], title: str = "Cosine similarity", ax=None, fmt: str = "{:.2f}"):
    """An annotated square heatmap (e.g. sentence similarities)."""
    ax = ax or plt.subplots(figsize=(6, 5))[1]
    image = ax.imshow(matrix, cmap="viridis", vmin=min(0.0, float(np.min(matrix))), vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, fmt.format(matrix[i, j]), ha="center", va="center", fontsize=7, color="white" if matrix[i, j] < 0.6 else "black")
    ax.set_title(title)
    plt.colorbar(image, ax=ax, fraction=0.046)
    return ax


def plot_bars(frame: pd.DataFrame, columns: Sequence[str], title: str, ylabel: str, ax=None, log: bool = False):
    """Grouped bars: one group per row of `frame`, one bar per column."""
    ax = ax or plt.subplots(figsize=(7, 3.8))[1]
    x = np.arange(len(frame))
    width = 0.8 / len(columns)
    for i, column in enumerate(columns):
        ax.bar(x + i * width - 0.4 + width / 2, frame[column], width, label=column)
    ax.set_xticks(x, frame.index, rotation=20, ha="right")
    ax.set(title=title, ylabel=ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    if len(columns) > 1:
        ax.legend(fontsize=8)
    return ax
