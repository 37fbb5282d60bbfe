"""Download the registry's tasks from their pinned parquet files and write the offline data layout.

    python scripts/fetch_data.py DIR                   # every task in mtl_helpers.tasks.TASKS
    python scripts/fetch_data.py DIR --tasks trec sst2

Writes DIR/<task>/<split>.jsonl (one JSON object per line, with the hub's field names and label
ids) and DIR/<task>/features.json (label names in id order): the layout of the shared data folder.
Each task is then loaded back from DIR as a check. Afterwards point MTL_DATA_DIR at DIR; CI can
cache DIR between runs. With MTL_HUB_MIRROR=<folder> the files are read from a local folder in the
hub's layout (<repo>@<revision>/<file>.parquet) instead of the hub.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mtl_helpers.loading import load_task  # noqa: E402
from mtl_helpers.sources import hub_dataset, hub_label_names  # noqa: E402
from mtl_helpers.tasks import TASKS, TaskSpec  # noqa: E402
from mtl_helpers.errors import DataError  # noqa: E402


def class_names(features) -> dict[str, list[str]]:
    """Label names of every class-label column (or sequence of class labels) the files carry."""
    out = {}
    for column, feature in features.items():
        names = getattr(getattr(feature, "feature", feature), "names", None)
        if names:
            out[column] = list(names)
    return out


def write_task(spec: TaskSpec, target: Path) -> dict[str, int]:
    """Write one task's source splits and features.json under target/<task>; returns rows per split."""
    dataset = hub_dataset(spec)
    partial = target / f"{spec.name}.partial"  # a failed download never leaves a half-written task folder
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    features: dict[str, list[str]] = {}
    sizes = {}
    for source in spec.hub_files:
        split = dataset[source]
        names = hub_label_names(spec, split.features)
        if names is not None and names != list(spec.label_names):
            raise DataError(
                f"{spec.hub_id} {source}: the files name the {spec.label_field} ids {names}, the registry "
                f"{list(spec.label_names)}. Fix label_names in TASKS[{spec.name!r}]."
            )
        features.update(class_names(split.features))
        rows = split.to_list()
        with open(partial / f"{source}.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        sizes[source] = len(rows)
    features[spec.label_field] = list(spec.label_names)  # parquet files need not carry the names; the registry does
    (partial / "features.json").write_text(json.dumps(features, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    final = target / spec.name
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, help="folder to write <task>/<split>.jsonl into (created if missing)")
    parser.add_argument(
        "--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS), help="tasks to fetch (default: all)"
    )
    args = parser.parse_args(argv)
    args.target.mkdir(parents=True, exist_ok=True)
    for name in args.tasks:
        spec = TASKS[name]
        try:
            sizes = write_task(spec, args.target)
            task = load_task(name, data_dir=args.target)  # the written copy must load, with leak-free splits
        except Exception as err:
            print(f"{name}: failed: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        rows = ", ".join(f"{s} {n}" for s, n in sizes.items())
        print(f"{name}: {spec.hub_id}@{spec.hub_revision[:7]} -> {args.target / name} ({rows}); loads as {task!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
