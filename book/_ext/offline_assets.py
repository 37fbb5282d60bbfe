"""Sphinx extension: the built book must work offline.

* Stops the HTML build with a clear message when MathJax is configured from a URL, or
  when the local copy (fetched by scripts/fetch_mathjax.sh into book/_static/mathjax/,
  git-ignored) is missing.
* Drops duplicate inline <script> blocks from every page. sphinx-thebe registers its
  configuration script twice under jupyter-book, and the second copy fails in the
  browser ("Identifier 'THEBE_JS_URL' has already been declared").
"""

from __future__ import annotations

from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ConfigError

FETCH_HINT = "run scripts/fetch_mathjax.sh (it downloads MathJax from the npm registry)"


def check_mathjax(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    path = app.config.mathjax_path or ""
    if "://" in path or path.startswith("//"):
        raise ConfigError(f"mathjax_path must be a local file under html_static_path, not {path!r}")
    confdir = Path(app.confdir)
    own = [static for static in app.config.html_static_path if not Path(static).is_absolute()]
    if not any((confdir / static / path).is_file() for static in own):
        wanted = " or ".join(f"{Path(static, path).as_posix()}" for static in own) or path
        raise ConfigError(f"MathJax not found ({wanted}): {FETCH_HINT}")


def drop_duplicate_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set = set()
    unique = []
    for script in scripts:
        attributes = getattr(script, "attributes", {}) or {}
        body = attributes.get("body")
        if body:  # inline script: keep the first copy of identical bodies
            if body in seen:
                continue
            seen.add(body)
        unique.append(script)
    if len(unique) != len(scripts):
        context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("builder-inited", check_mathjax)
    app.connect("html-page-context", drop_duplicate_scripts)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
