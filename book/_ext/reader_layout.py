"""Sphinx extension: layout settings of the theme that _config.yml cannot express.

* One search box. sphinx-book-theme puts a search field in the primary sidebar and a search
  button in the article header (shown on narrow screens, where the sidebar is a drawer);
  pydata-sphinx-theme 0.17 adds a third, a top bar holding only another search field
  (`navbar_persistent`, on by default unless set). Setting it empty removes that bar, so a
  wide page shows the sidebar's field and a narrow page the header's button.
* book/_static/reader.css: small layout fixes (see the comments there). Sphinx copies static
  files only when some page is rebuilt, so a change to this file marks every page outdated.

Theme options set in _config.yml's `sphinx.config.html_theme_options` would replace the ones
jupyter-book derives from the `html:` and `launch_buttons:` sections, so they are set here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.config import Config

THEME_OPTIONS = {"navbar_persistent": []}
CSS = "reader.css"


def theme_options(app: Sphinx, config: Config) -> None:
    options = dict(config.html_theme_options or {})
    for key, value in THEME_OPTIONS.items():
        options.setdefault(key, value)
    config.html_theme_options = options


def css_digest(app: Sphinx) -> str:
    path = Path(app.confdir) / "book" / "_static" / CSS
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def outdated_when_css_changed(app: Sphinx, env, added, changed, removed) -> list[str]:
    digest = css_digest(app)
    if getattr(env, "reader_css_digest", None) == digest:
        return []
    env.reader_css_digest = digest
    return sorted(env.found_docs - set(added) - set(changed))


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", theme_options)
    app.connect("env-get-outdated", outdated_when_css_changed)
    app.add_css_file(CSS)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
