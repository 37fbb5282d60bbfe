"""Sphinx extension: make cross-document glue references checkable in the built HTML.

myst-nb resolves a reference such as {glue:text}`/notebooks/03_backbone_frozen.ipynb::key:.3f`
after all documents are read. When the key is missing it logs a warning (an error
under ``-W``) and silently drops the reference, leaving nothing in the page. This
extension runs just before that step and

* wraps every cross-document glue reference in ``<span class="glue-ref">`` (or a
  ``<div class="glue-ref">`` for block pastes), so a reference that did not resolve
  shows up in the page as an empty ``.glue-ref`` element (tests/test_book.py looks
  for them);
* makes a page that pastes from a notebook depend on it, so that an incremental
  build re-checks the page when the notebook changes;
* lets the book build while a chapter is still a placeholder notebook: when the
  referenced notebook carries ``"mtl_placeholder": true`` in its notebook metadata
  and does not provide the key, the reference renders as a visible
  ``<span class="glue-ref glue-pending">not yet measured</span>`` instead of failing
  the build. A real notebook (without that flag) that lacks a key still fails
  the strict build.
"""
from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging

from myst_nb.ext.glue.crossref import read_glue_cache
from myst_nb.ext.glue.utils import PendingGlueReference

LOGGER = logging.getLogger(__name__)
PLACEHOLDER_FLAG = "mtl_placeholder"
PENDING_TEXT = "not yet measured"


def _is_placeholder(env, docname: str) -> bool:
    """True when `docname` is a notebook whose metadata has "mtl_placeholder": true."""
    path = Path(env.doc2path(docname))
    if path.suffix != ".ipynb" or not path.is_file():
        return False
    try:
        metadata = json.loads(path.read_text(encoding="utf8")).get("metadata", {})
    except (OSError, ValueError):
        return False
    return bool(metadata.get(PLACEHOLDER_FLAG))


class GuardPendingGlueReferences(SphinxPostTransform):
    """Runs before myst-nb's ReplacePendingGlueReferences (priority 5)."""

    default_priority = 4

    def run(self, **kwargs) -> None:
        cache_folder = self.env.mystnb_config.output_folder  # type: ignore[attr-defined]
        pending: dict[str, int] = {}
        for node in list(self.document.findall(PendingGlueReference)):
            inline = node.inline
            if node.key not in read_glue_cache(cache_folder, node.refdoc) and _is_placeholder(self.env, node.refdoc):
                pending[node.refdoc] = pending.get(node.refdoc, 0) + 1
                text = nodes.Text(PENDING_TEXT)
                if inline:
                    node.replace_self(nodes.inline("", "", text, classes=["glue-ref", "glue-pending"]))
                else:
                    node.replace_self(
                        nodes.container("", nodes.paragraph("", "", text), classes=["glue-ref", "glue-pending"])
                    )
                continue
            wrapper = nodes.inline(classes=["glue-ref"]) if inline else nodes.container(classes=["glue-ref"])
            node.replace_self(wrapper)
            wrapper.append(node)
        if pending:
            detail = ", ".join(f"{count} from {doc}" for doc, count in sorted(pending.items()))
            LOGGER.info(f"[glue_guard] {self.env.docname}: glue values pending, placeholder notebooks ({detail})")


def note_glue_dependencies(app: Sphinx, doctree: nodes.document) -> None:
    """Re-read a page whenever a notebook it pastes from changes (incremental builds)."""
    env = app.env
    for refdoc in sorted({node.refdoc for node in doctree.findall(PendingGlueReference)}):
        env.note_dependency(str(env.doc2path(refdoc)))


def setup(app: Sphinx) -> dict:
    app.setup_extension("myst_nb")
    app.connect("doctree-read", note_glue_dependencies)
    app.add_post_transform(GuardPendingGlueReferences)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
