"""Values for the book's {glue} references (myst-nb)."""

from __future__ import annotations

import numpy as np


def glue(name: str, value, display: bool = False) -> None:
    """Store a value for the book's {glue} references (myst-nb); a no-op where myst-nb is missing."""
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # e.g. on Colab, where the book toolchain is not installed
        return
    if isinstance(value, np.generic):
        value = value.item()
    myst_glue(name, value, display=display)
