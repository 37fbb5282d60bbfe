"""Execute the book's notebooks with papermill, in place or into another folder, and time them.

    python scripts/run_notebooks.py --profile cpu            # re-executes notebooks/ in place
    python scripts/run_notebooks.py --profile smoke --out DIR
    python scripts/run_notebooks.py --strip-only             # only clean the stored notebooks
    python scripts/run_notebooks.py --profile smoke --prepare-only --out DIR  # inject, do not run (make nbval)

After each run the notebook is cleaned: stored progress-bar frames are dropped, and so is the
"injected-parameters" cell papermill adds after the `parameters` cell. Left in place, that cell
would run after the `parameters` cell and undo a Colab reader's edits to it; the parameters of
the run stay recorded in the notebook's metadata (papermill.parameters). nbval's comment markers
(`# NBVAL_CHECK_OUTPUT` ...), which would show on the rendered page, become the equivalent cell
tags (`nbval-check-output` ...), which nbval reads as well and the page does not show.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mtl_helpers.jsonio import write_json_atomic  # noqa: E402
from bench.machine import machine_description  # noqa: E402


PROGRESS_FRAME = re.compile(r"^.*\d+%\|.*\| *\d+/\d+ \[.*\]$")  # "desc:  40%|####  | 40/100 [00:02<00:03, 9.9it/s]"


def is_progress_output(output: dict) -> bool:
    """An stderr output whose every segment (between carriage returns and newlines) is a tqdm frame."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return False
    segments = [p.strip() for p in re.split(r"[\r\n]", output.get("text", "")) if p.strip()]
    return bool(segments) and all(PROGRESS_FRAME.match(p) for p in segments)


INJECTED_TAG = "injected-parameters"  # papermill's tag for the cell it adds


def run_order(names: list[str]) -> list[str]:
    """Chapters in their order, except the comparison chapter, which runs last: it reads every other chapter's
    records, so a fresh run (`make notebooks`) must have made them all first, the later chapters included."""
    return sorted(names, key=lambda name: (Path(name).stem.endswith("_comparison"), Path(name).name))


def strip_progress_bars(nb) -> int:
    """Drop stored progress-bar frames: readers see the bars live, the stored notebook stays clean."""
    removed = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            kept = [o for o in cell.outputs if not is_progress_output(o)]
            removed += len(cell.outputs) - len(kept)
            cell.outputs = kept
    return removed


def strip_injected_parameters(nb) -> int:
    """Drop papermill's injected-parameters cells (and nothing else)."""
    kept = [c for c in nb.cells if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    removed = len(nb.cells) - len(kept)
    nb.cells = kept
    return removed


# nbval's comment markers and the cell tags it reads as the same thing (nbval/plugin.py: metadata_tags)
NBVAL_MARKERS = {
    "NBVAL_CHECK_OUTPUT": "nbval-check-output",
    "NBVAL_IGNORE_OUTPUT": "nbval-ignore-output",
    "NBVAL_SKIP": "nbval-skip",
    "NBVAL_RAISES_EXCEPTION": "nbval-raises-exception",
}


def nbval_comments_to_tags(nb) -> int:
    """Replace each `# NBVAL_...` comment line of a code cell by nbval's equivalent cell tag."""
    moved = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for line in cell.source.split("\n"):
            marker = line.strip().lstrip("#").strip()
            if line.strip().startswith("#") and marker in NBVAL_MARKERS:
                tags = cell.metadata.setdefault("tags", [])
                if NBVAL_MARKERS[marker] not in tags:
                    tags.append(NBVAL_MARKERS[marker])
                moved += 1
            else:
                kept.append(line)
        cell.source = "\n".join(kept)
    return moved


def clean_notebook(path: Path) -> dict:
    """Clean a stored notebook in place; returns what was changed. Writes only when something was."""
    nb = nbformat.read(path, as_version=4)
    removed = {
        "progress-bar outputs removed": strip_progress_bars(nb),
        "injected-parameters cells removed": strip_injected_parameters(nb),
        "NBVAL comments made tags": nbval_comments_to_tags(nb),
    }
    if any(removed.values()):
        nbformat.write(nb, path)
    return removed


def prepare_notebooks(names: list[str], out: Path, parameters: dict) -> list[Path]:
    """Copies of the named notebooks in `out` with papermill's injected-parameters cell, executed by nobody:
    `make nbval` runs them once with nbval, which compares the stored outputs of the cells tagged
    nbval-check-output (papermill's preparation keeps every output and tag)."""
    out.mkdir(parents=True, exist_ok=True)
    prepared = []
    for name in names:
        source = Path("notebooks") / Path(name).name
        papermill.execute_notebook(
            str(source),
            str(out / source.name),
            parameters=parameters,
            prepare_only=True,
            progress_bar=False,
            kernel_name="python3",
        )
        prepared.append(out / source.name)
    return prepared


def times_record(profile: str, times: dict) -> dict:
    """What --times writes: seconds per notebook and their total, and the machine they were measured on (the
    CPU by name, its flags that matter, cores, torch, the date), which the benchmark appendix states beside them."""
    return {"profile": profile, "seconds": times, "machine": machine_description()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu", "full"])
    parser.add_argument("--out", type=Path, help="write executed copies here instead of in place")
    parser.add_argument("--times", type=Path, help="write wall times per notebook (JSON) here")
    parser.add_argument(
        "--strip-only",
        action="store_true",
        help="only clean the stored notebooks (progress-bar frames, injected-parameters cells), run nothing",
    )
    parser.add_argument(
        "--prepare-only",
        action="store_true",
        help="only write copies with the parameters injected into --out (no kernel runs), for nbval",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete this profile's stored run records first, so every run is trained again (no reuse)",
    )
    parser.add_argument("notebooks", nargs="*", help="notebook names (default: all in notebooks/)")
    args = parser.parse_args()
    os.chdir(ROOT)  # relative paths keep machine paths out of papermill's metadata
    names = run_order(args.notebooks or [p.name for p in Path("notebooks").glob("[0-9][0-9]_*.ipynb")])
    if args.strip_only:
        for name in names:
            removed = clean_notebook(Path("notebooks") / Path(name).name)
            print(f"{name}: " + ", ".join(f"{n} {what}" for what, n in removed.items()))
        return 0
    if args.prepare_only:
        if args.out is None:
            parser.error("--prepare-only writes copies: give the folder with --out")
        for path in prepare_notebooks(names, args.out, {"profile": args.profile}):
            print(f"[{args.profile}] prepared {path.name}")
        return 0
    # The runner regenerates the book's records: a run whose spec changed replaces the stored one (save_record refuses
    # that in the checkout's results folder otherwise).
    os.environ.setdefault("MTL_REPLACE_RECORDS", "1")
    if args.fresh:
        from mtl_helpers.locations import results_dir

        records = results_dir(args.profile)
        if records.is_dir():
            shutil.rmtree(records)
            print(f"removed the stored {args.profile} records: every run is trained afresh", flush=True)
    times = {}
    for name in names:
        source = Path("notebooks") / Path(name).name
        target = (args.out / source.name) if args.out else source
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"[{args.profile}] {source} ...", flush=True)
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters={"profile": args.profile},
            cwd="notebooks",
            progress_bar=False,
            kernel_name="python3",
        )
        times[source.name] = round(time.perf_counter() - started, 1)
        clean_notebook(target)
        print(f"[{args.profile}] {source} done in {times[source.name]} s", flush=True)
    times["total"] = round(sum(times.values()), 1)
    if args.times:
        write_json_atomic(args.times, times_record(args.profile, times))
    print(json.dumps(times, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
