"""The book's figures fit the page's column and their text reads at least as large as the body text.

Measured in the built book at a 1280 px window (book/_static/reader.css): the content column is 740 CSS px
wide and the body text 16 px. An image wider than the column is scaled down to it, text and all; one that
fits shows at its natural size, one image pixel per CSS px. So a figure, saved as Jupyter's inline backend
saves it (its own dpi, bbox_inches="tight"), must be at most 740 px wide, and a text of s points, drawn at
s * dpi / 72 px, needs s * dpi / 72 >= 16."""

from __future__ import annotations

import io
import struct
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from mtl_helpers import RunRecord, plots  # noqa: E402
from mtl_helpers.callbacks import History  # noqa: E402
from mtl_helpers.stats import Comparison  # noqa: E402

COLUMN_PX = 740  # the article's content width at a 1280 px window
BODY_PX = 16  # the body text's font size


def saved_width_px(fig) -> int:
    """Width of the PNG that Jupyter's inline backend stores for `fig` (IPython's print_figure)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    return struct.unpack(">I", buffer.getvalue()[16:20])[0]  # the IHDR chunk's width


def small_texts(fig) -> list[str]:
    """Every shown text of `fig` drawn smaller than the body text, as 'text: size'."""
    fig.canvas.draw()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert texts, "the figure shows no text"
    return [
        f"{t.get_text()!r}: {t.get_fontsize():g} pt = {t.get_fontsize() * fig.dpi / 72:.1f} px"
        for t in texts
        if t.get_fontsize() * fig.dpi / 72 < BODY_PX - 1e-9
    ]


def record(name: str, seed: int, scores: dict[str, float]) -> RunRecord:
    return RunRecord(
        scenario=name,
        profile="cpu",
        seed=seed,
        model="m",
        tasks={t: {"level": "sentence", "metric": "accuracy", "sizes": {}} for t in scores},
        metrics={"validation": {t: {"accuracy": s} for t, s in scores.items()}},
    )


def arms() -> dict[str, list[RunRecord]]:
    rng = np.random.default_rng(0)
    names = ["frozen-backbone", "fine-tuned", "gradual-unfreezing", "heads-first"]
    return {
        name: [
            record(name, seed, {"sst2": 0.8 + 0.1 * rng.random(), "trec": 0.7 + 0.2 * rng.random()})
            for seed in range(3)
        ]
        for name in names
    }


def comparisons() -> list[Comparison]:
    return [
        Comparison(
            f"arm {i} with a long name",
            "the frozen baseline",
            0.01 * i,
            0.01 * i - 0.02,
            0.01 * i + 0.02,
            3,
            3,
            True,
            500,
        )
        for i in range(6)
    ]


def sweep(two_knobs: bool) -> pd.DataFrame:
    rates = [1e-5, 3e-5, 1e-4, 3e-4]
    if two_knobs:
        index = pd.MultiIndex.from_product([rates, [0.0, 0.1]])
        return pd.DataFrame({"mean": np.linspace(0.7, 0.8, 8), "seeds": 3, "chosen": [False] * 7 + [True]}, index=index)
    return pd.DataFrame(
        {
            "sst2": [0.8, 0.85, 0.82, 0.7],
            "trec": [0.6, 0.7, 0.75, 0.5],
            "mean": [0.7, 0.775, 0.785, 0.6],
            "seeds": 3,
            "chosen": [False, False, True, False],
        },
        index=rates,
    )


def curves() -> dict[str, pd.DataFrame]:
    def rows(shift: float) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {"examples": n, "accuracy": 0.5 + shift + 0.04 * i + 0.01 * seed, "seed": seed}
                for i, n in enumerate([100, 300, 1000, 3000])
                for seed in range(3)
            ]
        )

    return {"joint training": rows(0.05), "alone": rows(0.0)}


def history() -> History:
    groups = ["head.sst2", "head.trec", "extras", *(f"layer.{i}" for i in range(6)), "embeddings"]
    steps = [
        {"step": s, "loss": 1.0 / (s + 1), "lr": {g: 1e-4 * (s + 1) / (i + 1) for i, g in enumerate(groups)}}
        for s in range(20)
    ]
    result = History.from_steps(steps)
    result.evals = [
        {"epoch": e, "step": 10 * e, "stage": "", "task": t, "split": split, "accuracy": 0.6 + 0.05 * e}
        for e in range(1, 5)
        for t in ("sst2", "trec")
        for split in ("train", "validation")
    ]
    return result


def trainable() -> pd.DataFrame:
    index = ["head.sst2", "head.trec", *(f"layer.{i}" for i in reversed(range(6))), "embeddings"]
    parameters = np.array([1e3, 3e3, *[1.8e6] * 6, 12e6])
    return pd.DataFrame(
        {"parameters": parameters, "trainable": parameters * np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])}, index=index
    )


def heatmap():
    labels = [
        "capital of France?",
        "France's capital city?",
        "author of Moby Dick?",
        "people in Tokyo?",
        "warm, funny film",
        "charming, witty movie",
        "dull, lifeless film",
        "boring plot, wooden acting",
    ]
    rng = np.random.default_rng(1)
    matrix = rng.random((8, 8))
    return (matrix + matrix.T) / 2, labels


def bars() -> pd.DataFrame:
    return pd.DataFrame(
        {"CPU": [3.0, 40.0, 120.0], "GPU": [0.5, 2.0, 9.0]},
        index=["frozen backbone", "heads first", "full fine-tuning"],
    )


def layers() -> pd.DataFrame:
    rows = []
    for task, start in (("sst2", 0.6), ("trec", 0.4)):
        for layer in range(7):
            accuracy = start + 0.04 * layer
            rows.append(
                {
                    "task": task,
                    "layer": layer,
                    "test accuracy": accuracy,
                    "test low": accuracy - 0.03,
                    "test high": accuracy + 0.03,
                }
            )
    return pd.DataFrame(rows)


FIGURES = {
    "plot_arms": lambda: plots.plot_arms(arms(), title="Validation accuracy per arm"),
    "plot_effects": lambda: plots.plot_effects(comparisons()),
    "plot_sweep": lambda: plots.plot_sweep(sweep(two_knobs=False)),
    "plot_sweep grid": lambda: plots.plot_sweep(sweep(two_knobs=True), series="decay"),
    "plot_curves": lambda: plots.plot_curves(curves(), "examples", "accuracy", title="Accuracy by data", logx=True),
    "plot_learning_curves": lambda: plots.plot_learning_curves(history()),
    "plot_lr_groups": lambda: plots.plot_lr_groups(history()),
    "plot_trainable": lambda: plots.plot_trainable(trainable()),
    "plot_heatmap": lambda: plots.plot_heatmap(*heatmap()),
    "plot_accuracy_by_layer": lambda: plots.plot_accuracy_by_layer(layers()),
    "plot_bars": lambda: plots.plot_bars(bars(), ["CPU", "GPU"], "Seconds per epoch", "seconds", log=True),
}


def test_every_plot_function_is_checked():
    drawn = {name.split()[0] for name in FIGURES}
    assert drawn == {name for name in dir(plots) if name.startswith("plot_")}


@pytest.mark.parametrize("name", FIGURES)
def test_figure_fits_the_column_and_its_text_reads_as_large_as_the_body(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a layout that cannot fit its text warns
        ax = FIGURES[name]()
        fig = ax.figure
        try:
            assert fig.get_figwidth() * fig.dpi <= COLUMN_PX, f"{name}: {fig.get_figwidth():g} in at {fig.dpi:g} dpi"
            assert saved_width_px(fig) <= COLUMN_PX, f"{name}: the page would scale it down"
            assert not small_texts(fig), f"{name}: texts smaller than the {BODY_PX} px body text: {small_texts(fig)}"
        finally:
            plt.close(fig)


def test_plain_matplotlib_figures_get_the_book_style():
    """The chapters' own figures (plt.subplots without a size) follow the same rule once plots is imported."""
    fig, (left, right) = plt.subplots(1, 2)
    try:
        for ax in (left, right):
            ax.plot([1, 2, 3], [0.5, 0.7, 0.6], label="a run")
            ax.set(title="a panel", xlabel="epoch", ylabel="accuracy")
            ax.legend()
        fig.suptitle("two panels")
        assert saved_width_px(fig) <= COLUMN_PX
        assert not small_texts(fig), small_texts(fig)
    finally:
        plt.close(fig)


def test_the_checks_find_a_figure_too_wide_or_text_too_small():
    fig, ax = plt.subplots(figsize=(12, 4), dpi=100)
    try:
        ax.set_title("small", fontsize=9)
        assert saved_width_px(fig) > COLUMN_PX
        assert any(text.startswith("'small': 9 pt") for text in small_texts(fig))
    finally:
        plt.close(fig)


def overflowing_figures():
    """Three figures whose content reaches past their width after tight_layout, as chapter figures did:
    a title wider than a panel squeezed by long tick labels, a panel narrowed by a legend beside it under
    a long title, and a pair of panels with titles wider than each."""
    fig, ax = plt.subplots(figsize=(plots.FIG_WIDTH, 4))
    ax.barh(range(4), [1, 2, 3, 4])  # chapter 3's forest plot: its labels and title
    ax.set_yticks(range(4), [f"head-only gap ({t}) vs full fine-tuning gap" for t in ("trec", "sst2", "mean", "x")])
    ax.set_title("Differences by the noise rule (test, 95% intervals)")
    yield fig
    fig, ax = plt.subplots(figsize=(plots.FIG_WIDTH, 4))
    for i in range(4):
        ax.plot([0, 1], [i, i + 1], label=f"{i} layers: 22.7M parameters")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))  # chapter 8's: the panel narrows, its title not
    ax.set_title("Test accuracy against training speed (each dot a seed; mean ± 1 sd)")
    yield fig
    fig, (left, right) = plt.subplots(1, 2, figsize=(plots.FIG_WIDTH, 3.8))  # chapter 2's pair
    left.bar([0, 1], [3, 4])
    right.bar([0, 1], [3, 4])
    left.set_title("Inference: frozen or not (bar: median, dots: timings)")
    right.set_title('The only "training" vs an epoch of fine-tuning')
    yield fig


@pytest.mark.parametrize("index", range(3))
def test_fit_to_column_keeps_what_is_drawn_inside_the_figure(index):
    from mtl_helpers.column_fit import fit_to_column, overflow_inches

    fig = list(overflowing_figures())[index]
    try:
        fig.tight_layout()
        assert saved_width_px(fig) > COLUMN_PX, "the example no longer overflows: it tests nothing"
        fit_to_column(fig)
        assert max(overflow_inches(fig)) * fig.dpi < 1
        assert saved_width_px(fig) <= COLUMN_PX
        assert fig.get_figwidth() == pytest.approx(plots.FIG_WIDTH)  # the figure keeps its size
    finally:
        plt.close("all")


def test_a_notebook_shows_every_figure_fitted_to_the_column():
    """In IPython with the inline backend, the stored PNG of an overflowing figure fits the column."""
    script = """
import base64, struct
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.pylabtools import select_figure_formats
import matplotlib
matplotlib.use("Agg")
shell = InteractiveShell.instance()
select_figure_formats(shell, {"png"})  # what %matplotlib inline sets up
import matplotlib.pyplot as plt
from mtl_helpers import plots
from mtl_helpers.column_fit import fit_figures_when_shown
fig, ax = plt.subplots(figsize=(plots.FIG_WIDTH, 4))
for i in range(4):
    ax.plot([0, 1], [i, i + 1], label=f"{i} layers: 22.7M parameters")
ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
ax.set_title("Test accuracy against training speed (each dot a seed; mean ± 1 sd)")
fig.tight_layout()
data, _ = shell.display_formatter.format(fig)
png = base64.b64decode(data["image/png"])
print(struct.unpack(">I", png[16:20])[0], fit_figures_when_shown())
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    width, hooked = done.stdout.split()
    assert hooked == "True" and int(width) <= COLUMN_PX


def test_a_title_wider_than_its_panel_is_wrapped_not_squeezed():
    """Chapter 2's pair: its titles are wider than their panels; wrapped, they fit, and the panels keep
    the width that tight_layout gave them instead of being squeezed to make room."""
    from mtl_helpers.column_fit import fit_to_column

    fig = list(overflowing_figures())[2]
    try:
        fig.tight_layout()
        before = [ax.get_position().width for ax in fig.axes]
        fit_to_column(fig)
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            assert ax.title.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width
            assert "\n" in ax.title.get_text()
        assert [ax.get_position().width for ax in fig.axes] == pytest.approx(before, rel=0.05)
        assert saved_width_px(fig) <= COLUMN_PX
    finally:
        plt.close("all")
