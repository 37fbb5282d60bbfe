"""The Colab setup cell: the first code cell of every notebook, rendered from _config.yml.

    python scripts/colab_setup_cell.py           # print the cell
    python scripts/colab_setup_cell.py --write   # make cell 1 of every notebook this cell
    python scripts/colab_setup_cell.py --check   # exit 1 when a notebook's setup cell differs

The repository URL lives in one place, `repository.url` in _config.yml; this script writes it
into the cell. On Colab the cell pip-installs the book's package with its offline model
(`mtl-helpers[model] @ git+<url>@main`); wherever `mtl_helpers` is importable already (a local
checkout, CI, a second run on Colab) it does nothing. Everything already installed is passed
to pip as a constraint, so pip only adds what is missing and never reinstalls, upgrades or
downgrades what Colab preinstalls (torch, transformers, datasets, scikit-learn, pandas, ...).
When the install fails the cell prints one line naming the URL, and where pip's log is,
instead of a traceback.

The cell is tagged `remove-cell`: on the book's pages it would only be an empty, collapsed
block before the chapter starts (it has no output and does nothing there), while Colab ignores
the tag, so a Colab reader sees it as the first code cell, with the URL to edit at its top.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_GLOB = "[0-9][0-9]_*.ipynb"
TAG = "remove-cell"
MARKER = 'importlib.util.find_spec("mtl_helpers") is None'  # how a setup cell is recognised
INDEX = 1  # after the chapter's title cell, before the imports

TEMPLATE = """\
# Colab: install the book's package (mtl_helpers) and its offline model. Where it is installed, this does nothing.
REPO_URL = "{url}"  # the book's repository (or your fork of it)
import importlib.metadata, importlib.util, os, re, subprocess, sys, tempfile
if {marker}:
    # Everything installed (torch, transformers, datasets, ...) is pinned: pip only adds what is missing.
    pins = {{}}
    for dist in importlib.metadata.distributions():
        name, version = dist.metadata["Name"], dist.version
        packaging_tool = (name or "pip").lower() in ("pip", "setuptools", "wheel")  # builds may need newer ones
        if not packaging_tool and re.fullmatch(r"[0-9][0-9a-z.+]*", version or ""):
            pins.setdefault(re.sub(r"[-_.]+", "-", name).lower(), f"{{name}}=={{version}}")
    constraints = os.path.join(tempfile.gettempdir(), "preinstalled.txt")
    log = os.path.join(tempfile.gettempdir(), "mtl_helpers-pip.log")
    with open(constraints, "w") as file:
        file.write("\\n".join(pins.values()))
    with open(log, "w") as file:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-c", constraints,
                              f"mtl-helpers[model] @ git+{{REPO_URL}}@main"], stdout=file, stderr=file)
    importlib.invalidate_caches()
    if pip.returncode != 0:
        print(f"Could not install mtl_helpers from {{REPO_URL}}: set REPO_URL at the top of this cell "
              f"to the book's repository and run it again (pip's messages: {{log}}).")"""


def repository_url(root: Path = ROOT) -> str:
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf8"))
    return config["repository"]["url"].rstrip("/")


def cell_source(url: str | None = None) -> str:
    """The canonical text of the setup cell, for the repository URL of _config.yml by default."""
    return TEMPLATE.format(url=url or repository_url(), marker=MARKER)


def setup_cell_indices(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and MARKER in c.source]


def apply(nb, source: str) -> bool:
    """Make cell INDEX of `nb` the setup cell with `source`; returns whether anything changed.

    An existing setup cell (recognised by MARKER) keeps its id and metadata and moves to INDEX;
    a notebook without one gets a new cell there."""
    before = nbformat.writes(nb)
    found = setup_cell_indices(nb)
    cells = [c for i, c in enumerate(nb.cells) if i not in found]  # a notebook needs one setup cell
    cell = nb.cells[found[0]] if found else nbformat.v4.new_code_cell("")
    cell.source = source
    tags = [t for t in cell.metadata.get("tags", []) if t not in {"hide-input", "hide-cell", "remove-input", TAG}]
    cell.metadata["tags"] = tags + [TAG]
    cell.outputs = []
    nb.cells = cells[:INDEX] + [cell] + cells[INDEX:]
    return nbformat.writes(nb) != before


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob(NOTEBOOK_GLOB))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the setup cell of every notebook")
    mode.add_argument("--check", action="store_true", help="exit 1 when a notebook's setup cell differs")
    args = parser.parse_args()
    source = cell_source()
    if not (args.write or args.check):
        print(source)
        return 0
    differ = []
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        if apply(nb, source):
            differ.append(path.name)
            if args.write:
                nbformat.write(nb, path)
    verb = "rewrote" if args.write else "differs in"
    print(f"setup cell {verb}: {', '.join(differ) or 'none'}")
    return 1 if (args.check and differ) else 0


if __name__ == "__main__":
    sys.exit(main())
