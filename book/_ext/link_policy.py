"""Sphinx extension: what `make linkcheck` checks.

* Links inside the book (relative paths in the sources) are always checked: Sphinx's linkcheck
  builder reports a missing local file as broken. Cross-references and their targets are
  checked by the strict HTML build itself (-W -n), and scripts/check_links.py checks every
  relative link and #anchor of the built HTML.
* External links (http, https) are checked only with MTL_LINKCHECK_EXTERNAL=1; otherwise they
  are ignored, so that the check passes offline. When they are checked, their #anchors are
  checked too (linkcheck_anchors).
"""

from __future__ import annotations

import os

from sphinx.application import Sphinx
from sphinx.config import Config

EXTERNAL = r"^https?://"


def external_links_policy(app: Sphinx, config: Config) -> None:
    if os.environ.get("MTL_LINKCHECK_EXTERNAL") == "1":
        config.linkcheck_anchors = True
        config.linkcheck_timeout = config.linkcheck_timeout or 30
        config.linkcheck_retries = max(config.linkcheck_retries, 2)
    elif EXTERNAL not in config.linkcheck_ignore:
        config.linkcheck_ignore = [*config.linkcheck_ignore, EXTERNAL]


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", external_links_policy)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
