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
  build re-checks the page when the notebook changes.

A missing key still fails the strict build (myst-nb's own warning).
"""

from __future__ import annotations

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform

from myst_nb.ext.glue.utils import PendingGlueReference


class GuardPendingGlueReferences(SphinxPostTransform):
    """Runs before myst-nb's ReplacePendingGlueReferences (priority 5)."""

    default_priority = 4

    def run(self, **kwargs) -> None:
        for node in list(self.document.findall(PendingGlueReference)):
            wrapper = nodes.inline(classes=["glue-ref"]) if node.inline else nodes.container(classes=["glue-ref"])
            node.replace_self(wrapper)
            wrapper.append(node)


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
