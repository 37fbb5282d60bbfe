"""The book's figures. Every figure of a seeded comparison shows each seed as a point and the mean
with an error bar (one standard deviation over seeds), or a band of the same width on a curve.

Importing this module sets matplotlib's defaults for the page (`book_style`): figures as wide as the
book's text column and text at least as large as the body text, so that the page never scales a figure
down. The chapters' own matplotlib figures get the same defaults, as long as they set no size; in a
notebook, every figure is also fitted to its width as it is shown (`column_fit`), so a legend beside the
axes or a long title cannot widen the stored image past the column."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import PercentFormatter

from .callbacks import History
from .column_fit import fit_figures_when_shown
from .records import RunRecord
from .stats import Comparison

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]

# Measured in the built book at a 1280 px window (book/_static/reader.css): the text column is 740 CSS px
# wide, the body text 16 px. A wider image is scaled down to the column, its text with it; one that fits
# shows one image pixel per CSS px, where a text of s points at DPI is s * DPI / 72 px tall.
COLUMN_PX = 740
BODY_PX = 16
DPI = 100
MIN_FONT_PT = BODY_PX * 72 / DPI  # 11.52 pt: the smallest text that reads as large as the body
FONT_PT = 12
TITLE_PT = 13
# Jupyter saves a figure with bbox_inches="tight": the drawn content plus this margin on each side.
# With the layout keeping every text inside the figure, the PNG is at most FIG_WIDTH + 2 * PAD_INCHES.
PAD_INCHES = 0.1
FIG_WIDTH = COLUMN_PX / DPI - 2 * PAD_INCHES  # 7.2 in


def book_style() -> None:
    """matplotlib defaults for the page: column-wide figures at DPI, laid out to keep every text
    inside the figure, with every text (ticks, labels, legends, titles) at least MIN_FONT_PT."""
    plt.rcParams.update(
        {
            "figure.dpi": DPI,
            "savefig.dpi": "figure",
            "savefig.pad_inches": PAD_INCHES,
            "figure.figsize": (FIG_WIDTH, 4.2),
            "figure.autolayout": True,
            "font.size": FONT_PT,
            "axes.titlesize": TITLE_PT,
            "figure.titlesize": TITLE_PT,
            "axes.labelsize": FONT_PT,
            "xtick.labelsize": FONT_PT,
            "ytick.labelsize": FONT_PT,
            "legend.fontsize": FONT_PT,
            "legend.title_fontsize": FONT_PT,
        }
    )
    fit_figures_when_shown()


book_style()


def _percent(ax, axis: str = "y") -> None:
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(PercentFormatter(1.0, decimals=0))


def plot_arms(
    arms: Mapping[str, Sequence[RunRecord]],
    tasks: Sequence[str] | None = None,
    split: str = "validation",
    title: str = "",
    ax=None,
    ylabel: str | None = None,
):
    """Per arm and task: every seed as a dot, the mean as a bar end with a ±1 sd error bar."""
    names = list(arms)
    tasks = list(tasks) if tasks is not None else list(next(iter(arms.values()))[0].tasks)
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, 4.4))[1]
    width = 0.8 / len(tasks)
    x = np.arange(len(names))
    for j, task in enumerate(tasks):
        offset = x - 0.4 + width * (j + 0.5)
        values = [np.array([r.metric(task, split) for r in arms[n]]) for n in names]
        means = [v.mean() for v in values]
        sds = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in values]
        ax.bar(offset, means, width * 0.9, color=COLORS[j % len(COLORS)], alpha=0.35, label=task)
        ax.errorbar(offset, means, yerr=sds, fmt="none", ecolor="black", capsize=3, lw=1)
        for xi, v in zip(offset, values):
            ax.scatter(np.full(len(v), xi), v, s=12, color=COLORS[j % len(COLORS)], zorder=3)
    ax.set_xticks(
        x,
        names,
        rotation=20 if len(names) > 2 else 0,
        ha="right" if len(names) > 2 else "center",
        rotation_mode="anchor",
    )
    metric = next(iter(arms.values()))[0].tasks[tasks[0]]["metric"].replace("_", " ")
    ax.set(title=title, ylabel=ylabel or f"{split} {metric}")
    lows = [r.metric(t, split) for rs in arms.values() for r in rs for t in tasks]
    ax.set_ylim(max(0.0, min(lows) - 0.08), min(1.0, max(lows) + 0.05))
    _percent(ax)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="lower right")
    return ax


# higher and lower beyond the noise, equivalent within the book's margin, unresolved: neither
OUTCOME_COLORS = {"higher": "tab:green", "lower": "tab:red", "equivalent": "tab:blue", "unresolved": "tab:gray"}


def plot_effects(
    comparisons: Sequence[Comparison],
    title: str = "Differences with their 95% intervals",
    ax=None,
    xlabel: str = "difference in points",
):
    """A forest plot: each comparison's effect (A - B, in points) with its interval, and zero."""
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, 0.5 * len(comparisons) + 1.5))[1]
    y = np.arange(len(comparisons))[::-1]
    for yi, c in zip(y, comparisons):
        color = OUTCOME_COLORS[c.outcome]
        ax.plot([100 * c.low, 100 * c.high], [yi, yi], color=color, lw=2.5)
        ax.scatter([100 * c.effect], [yi], color=color, zorder=3, s=30)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{c.a} vs {c.b}" for c in comparisons])
    ax.set(title=title, xlabel=xlabel)
    ax.grid(alpha=0.3, axis="x")
    return ax


def plot_sweep(
    table: pd.DataFrame,
    title: str = "Learning-rate sweep (validation)",
    ax=None,
    xlabel: str = "learning rate",
    series: str = "",
    logx: bool = True,
):
    """Mean validation score per swept value (log x), the chosen value ringed. A two-level index (a grid
    over two knobs) draws one line per value of the second knob, labelled `series`."""
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, 4.2))[1]
    if isinstance(table.index, pd.MultiIndex):
        for i, (second, part) in enumerate(table.groupby(level=1, sort=True)):
            xs = [float(v) for v in part.index.get_level_values(0)]
            ax.plot(xs, part["mean"], marker="o", color=COLORS[i % len(COLORS)], label=f"{series} {second:g}".strip())
        chosen = table[table["chosen"]]
        best_x = float(chosen.index.get_level_values(0)[0])
    else:
        xs = [float(v) for v in table.index]
        tasks = [c for c in table.columns if c not in ("mean", "seeds", "chosen")]
        for i, task in enumerate(tasks):
            ax.plot(xs, table[task], marker="o", color=COLORS[i % len(COLORS)], alpha=0.6, label=task)
        ax.plot(xs, table["mean"], marker="s", color="black", lw=1.5, label="mean")
        chosen = table[table["chosen"]]
        best_x = float(chosen.index[0])
    ax.scatter(
        [best_x],
        [chosen["mean"].iloc[0]],
        s=160,
        facecolors="none",
        edgecolors="tab:red",
        linewidths=2,
        zorder=4,
        label="chosen",
    )
    if logx:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel="validation score (mean of tasks)")
    _percent(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return ax


def plot_curves(
    curves: Mapping[str, pd.DataFrame],
    x: str,
    y: str,
    title: str = "",
    ax=None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    logx: bool = False,
    percent: bool = True,
):
    """One line per arm: the mean over seeds of `y` against `x`, with a ±1 sd band; `curves` maps an
    arm to a frame with columns x, y and seed."""
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, 4.2))[1]
    for i, (name, frame) in enumerate(curves.items()):
        stats = frame.groupby(x)[y].agg(["mean", "std", "count"]).reset_index()
        sd = stats["std"].fillna(0.0)
        color = COLORS[i % len(COLORS)]
        ax.plot(stats[x], stats["mean"], marker="o", ms=4, color=color, label=name)
        ax.fill_between(stats[x], stats["mean"] - sd, stats["mean"] + sd, color=color, alpha=0.15)
    if logx:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel or x, ylabel=ylabel or y)
    if percent:
        _percent(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return ax


def plot_learning_curves(history: History, metric: str = "accuracy", title: str = "Learning curves", ax=None):
    """Train (dashed) and validation (solid) `metric` per task against epochs."""
    frame = history.frame()
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, 4.2))[1]
    for (task, split), part in frame.groupby(["task", "split"]):
        if metric in part and part[metric].notna().any():
            ax.plot(
                part["epoch"],
                part[metric],
                marker="o",
                linestyle="--" if split == "train" else "-",
                label=f"{task} ({split})",
            )
    ax.set(title=title, xlabel="epoch", ylabel=metric.replace("_", " "))
    _percent(ax)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


# "lora." or "lora.<adapter>." before the group an adapter sits in (mtl_helpers.groups)
_ADAPTER_PREFIX = re.compile(r"^[a-z0-9]+\.(?:[^.]+\.)?(?=layer\.\d+$|embeddings$|extras$)")


def _top_down(name) -> tuple:
    """Sort key of a layer group's name: heads, extras, the layers from the top, the embeddings; an
    adapter's group ("lora.layer.3", "lora.trec.layer.3") right after the group it sits in."""
    name = str(name)
    if name.startswith("head."):
        return (0, 0, 0, name)
    base = _ADAPTER_PREFIX.sub("", name)
    adapter = int(base != name)
    if base.startswith("layer.") and base[6:].isdigit():
        return (2, -int(base[6:]), adapter, name)
    return (1 if base == "extras" else 3, 0, adapter, name)


def plot_lr_groups(history: History, title: str = "Learning rate per layer group", ax=None):
    """Learning rate of each optimizer group over the steps (log scale), listed from the top group down;
    no-decay twins are hidden."""
    lrs = history.lr_frame()
    lrs = lrs[sorted((c for c in lrs.columns if not str(c).endswith("/no_decay")), key=_top_down)]
    # the legend beside the axes, one column up to 12 groups, two beyond
    rows = len(lrs.columns) if len(lrs.columns) <= 12 else -(-len(lrs.columns) // 2)
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, max(4.2, 0.27 * rows + 1.2)))[1]
    colors = plt.cm.viridis(np.linspace(0, 0.95, len(lrs.columns)))
    for color, column in zip(colors, lrs.columns):
        ax.plot(lrs.index, lrs[column], color=color, label=column)
    ax.set_yscale("log")
    ax.set(title=title, xlabel="optimizer step", ylabel="learning rate (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(ncol=1 if rows == len(lrs.columns) else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return ax


def plot_trainable(summary: pd.DataFrame, title: str = "Parameters per layer group", ax=None):
    """Horizontal bars of parameters per group (bottom group at the bottom), trainable vs frozen."""
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, 0.3 * len(summary) + 1.5))[1]
    y = np.arange(len(summary))
    frozen = summary["parameters"] - summary["trainable"]
    ax.barh(y, summary["trainable"] / 1e6, color="tab:orange", label="trainable")
    ax.barh(y, frozen / 1e6, left=summary["trainable"] / 1e6, color="tab:blue", alpha=0.6, label="frozen")
    ax.set_yticks(y, summary.index)
    ax.set(title=title, xlabel="parameters (millions)")
    ax.legend()
    return ax


def plot_heatmap(
    matrix: np.ndarray, labels: Sequence[str], title: str = "Cosine similarity", ax=None, fmt: str = "{:.2f}"
):
    """An annotated square heatmap (e.g. sentence similarities)."""
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, 6.2))[1]
    image = ax.imshow(matrix, cmap="viridis", vmin=min(0.0, float(np.min(matrix))), vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                fmt.format(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if matrix[i, j] < 0.6 else "black",
            )
    ax.set_title(title)
    plt.colorbar(image, ax=ax, fraction=0.046)
    return ax


def plot_bars(
    frame: pd.DataFrame,
    columns: Sequence[str],
    title: str,
    ylabel: str,
    ax=None,
    log: bool = False,
    percent: bool = False,
):
    """Grouped bars: one group per row of `frame`, one bar per column."""
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, 4.2))[1]
    x = np.arange(len(frame))
    width = 0.8 / len(columns)
    for i, column in enumerate(columns):
        ax.bar(x + i * width - 0.4 + width / 2, frame[column], width, label=column)
    ax.set_xticks(x, frame.index, rotation=20, ha="right", rotation_mode="anchor")
    ax.set(title=title, ylabel=ylabel)
    if log:
        ax.set_yscale("log")
    if percent:
        _percent(ax)
    ax.grid(alpha=0.3, axis="y")
    if len(columns) > 1:
        ax.legend()
    return ax


def plot_accuracy_by_layer(
    frame: pd.DataFrame, title: str = "Linear probe accuracy by layer", ax=None, ylabel: str = "test accuracy"
):
    """One line per task: a probe's test accuracy on each layer's mean-pooled output (`layer_probe`'s
    frame), the interval ("test low" to "test high") as error bars; layer 0 is the embeddings' output."""
    ax = ax or plt.subplots(figsize=(FIG_WIDTH, 4.2))[1]
    groups = list(frame.groupby("task", sort=False))
    for i, (task, part) in enumerate(groups):
        part = part.sort_values("layer")
        accuracy = part["test accuracy"].to_numpy()
        error = [accuracy - part["test low"].to_numpy(), part["test high"].to_numpy() - accuracy]
        shift = 0.06 * (i - (len(groups) - 1) / 2)  # side by side, so that the error bars do not overlap
        color = COLORS[i % len(COLORS)]
        ax.errorbar(part["layer"] + shift, accuracy, yerr=error, marker="o", capsize=3, color=color, label=task)
    layers = sorted(int(x) for x in frame["layer"].unique())
    ax.set_xticks(layers, ["embeddings" if x == 0 else str(x) for x in layers])
    ax.set(title=title, xlabel="layer (0: the embedding layer's output)", ylabel=ylabel)
    _percent(ax)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return ax
