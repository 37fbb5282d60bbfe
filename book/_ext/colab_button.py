"""Sphinx extension: label the theme's Colab launch button "Open in Colab".

sphinx-book-theme builds the launch menu (rocket icon) of every notebook page from
``launch_buttons.colab_url`` and ``repository`` in _config.yml; its Colab entry is
labelled just "Colab". This handler runs after the theme's (priority 501) and only
changes the label and tooltip; the link itself is the theme's:
``<colab_url>/github/<owner>/<repo>/blob/<branch>/<path_to_book>/<page>.ipynb``.
"""

from __future__ import annotations

from sphinx.application import Sphinx

LABEL = "Open in Colab"


def _relabel(buttons: list) -> None:
    for button in buttons:
        if button.get("type") == "group":
            _relabel(button.get("buttons", []))
        elif button.get("type") == "link" and str(button.get("url", "")).startswith(
            "https://colab.research.google.com/"
        ):
            button["text"] = LABEL
            button["tooltip"] = LABEL


def relabel_colab(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    _relabel(context.get("header_buttons", []) or [])


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", relabel_colab, priority=502)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
