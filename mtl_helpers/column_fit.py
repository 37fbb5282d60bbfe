"""Figures whose drawn content stays inside their own width, so the page never scales them down.

Jupyter stores a figure as the PNG of its tight bounding box (`bbox_inches="tight"`): everything drawn,
wherever it is. A legend placed beside the axes, a title wider than its panel or long tick labels can
reach past the figure's edge even after `tight_layout`, and the stored image then comes out wider than
the figure, and wider than the book's column, which scales it down, text and all. `fit_to_column`
first wraps a title wider than its panel (or a figure title wider than the figure) onto more lines, and
then, if anything still reaches past the figure's edges, moves the subplots' left and right edges in by
that much until nothing does.
`fit_figures_when_shown` makes IPython do that to every figure it shows (`plots.book_style` calls it)."""

from __future__ import annotations

import textwrap

from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine, TightLayoutEngine

TOLERANCE_PX = 0.5  # content may reach this far past an edge: less than a pixel of the stored image
MIN_PANEL_SHARE = 0.2  # never squeeze the subplots into less than this share of the figure's width


def overflow_inches(fig: Figure) -> tuple[float, float]:
    """How far the drawn content reaches past the figure's left and right edges, in inches (0 if not)."""
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    return max(0.0, -box.x0), max(0.0, box.x1 - fig.get_figwidth())


def wrap_wide_titles(fig: Figure) -> bool:
    """Wrap every axes title wider than its axes, and a figure title wider than the figure, onto as many
    lines as it takes to fit; True when one was wrapped."""
    renderer = fig.canvas.get_renderer()
    fig_width = fig.bbox.width
    wrapped = False
    titles = [(ax.title, ax.get_window_extent(renderer).width) for ax in fig.axes]
    suptitle = getattr(fig, "_suptitle", None)  # matplotlib keeps the Text of fig.suptitle() here
    if suptitle is not None:
        titles.append((suptitle, fig_width))
    for title, room in titles:
        text = title.get_text()
        width = title.get_window_extent(renderer).width
        if not text or width <= room:
            continue
        longest = max(len(line) for line in text.splitlines())
        title.set_text(textwrap.fill(" ".join(text.split()), max(12, int(longest * room / width))))
        wrapped = True
    return wrapped


def fit_to_column(fig: Figure, tries: int = 8) -> Figure:
    """Lay `fig` out; if its drawn content reaches past its width, wrap its too-wide titles and lay it
    out again, then move its subplots' edges in until nothing reaches past.

    A figure under the tight layout engine (the book's default, `figure.autolayout`) is laid out once and
    then keeps that layout, adjusted; one under constrained layout is left to it (it places legends
    beside the axes itself); a figure whose axes do not follow the subplot parameters (`add_axes` with a
    rectangle) keeps whatever overflow they have. Returns `fig`."""
    engine = fig.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        return fig
    if isinstance(engine, TightLayoutEngine):
        fig.tight_layout()  # the engine is then removed, so the next draw keeps the adjustment
    if max(overflow_inches(fig)) * fig.dpi >= TOLERANCE_PX and wrap_wide_titles(fig):
        fig.tight_layout()  # again, around the wrapped titles
    width = fig.get_figwidth()
    for _ in range(tries):
        left, right = overflow_inches(fig)
        if (left + right) * fig.dpi < TOLERANCE_PX:
            break
        params = fig.subplotpars
        new_left, new_right = params.left + left / width, params.right - right / width
        if new_right - new_left < MIN_PANEL_SHARE:
            break
        fig.subplots_adjust(left=new_left, right=new_right)
    return fig


def fit_figures_when_shown() -> bool:
    """In IPython with an inline backend, fit every figure to its width just before it is shown; True
    when the hook is in place. Run `%matplotlib inline` first: choosing a backend resets IPython's
    figure formatters, and with them this hook."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    png = shell.display_formatter.formatters["image/png"]
    try:
        show = png.lookup_by_type(Figure)
    except KeyError:  # no inline backend: figures are not shown as PNGs
        return False
    if getattr(show, "fits_column", False):
        return True

    def show_fitted(fig: Figure, *args, **kwargs):
        return show(fit_to_column(fig), *args, **kwargs)

    show_fitted.fits_column = True
    png.for_type(Figure, show_fitted)
    return True
