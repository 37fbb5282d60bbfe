"""Execute the book's notebooks with papermill, in place or into another folder, and time them.

    python scripts/run_notebooks.py --profile cpu            # re-executes notebooks/ in place
    python scripts/run_notebooks.py --profile smoke --out DIR
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import papermill

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mtl_helpers.results import write_json_atomic  # noqa: E402


PROGRESS_FRAME = re.compile(r"^.*\d+%\|.*\| *\d+/\d+ \[.*\]$")  # "desc:  40%|####  | 40/100 [00:02<00:03, 9.9it/s]"


def is_progress_output(output: dict) -> bool:
    """An stderr output whose every segment (between carriage returns and newlines) is a tqdm frame."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return False
    segments = [p.strip() for p in re.split(r"[\r\n]", output.get("text", "")) if p.strip()]
    return bool(segments) and all(PROGRESS_FRAME.match(p) for p in segments)


def strip_progress_bars(path: Path) -> int:
    """Drop stored progress-bar frames: readers see the bars live, the stored notebook stays clean."""
    nb = nbformat.read(path, as_version=4)
    removed = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            kept = [o for o in cell.outputs if not is_progress_output(o)]
            removed += len(cell.outputs) - len(kept)
            cell.outputs = kept
    nbformat.write(nb, path)
    return removed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    parser.add_argument("--out", type=Path, help="write executed copies here instead of in place")
    parser.add_argument("--times", type=Path, help="write wall times per notebook (JSON) here")
    parser.add_argument("--strip-only", action="store_true", help="only remove stored progress-bar frames, run nothing")
    parser.add_argument("notebooks", nargs="*", help="notebook names (default: all in notebooks/)")
    args = parser.parse_args()
    os.chdir(ROOT)  # relative paths keep machine paths out of papermill's metadata
    names = args.notebooks or sorted(p.name for p in Path("notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.strip_only:
        for name in names:
            print(f"{name}: removed {strip_progress_bars(Path('notebooks') / Path(name).name)} progress-bar outputs")
        return 0
    times = {}
    for name in names:
        source = Path("notebooks") / Path(name).name
        target = (args.out / source.name) if args.out else source
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"[{args.profile}] {source} ...", flush=True)
        papermill.execute_notebook(
            str(source), str(target), parameters={"profile": args.profile},
            cwd="notebooks", progress_bar=False, kernel_name="python3",
        )
        times[source.name] = round(time.perf_counter() - started, 1)
        strip_progress_bars(target)
        print(f"[{args.profile}] {source} done in {times[source.name]} s", flush=True)
    times["total"] = round(sum(times.values()), 1)
    if args.times:
        write_json_atomic(args.times, {"profile": args.profile, "seconds": times})
    print(json.dumps(times, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
