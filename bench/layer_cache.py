"""Seconds per optimizer step when the top k of all-MiniLM-L6-v2's 6 layers train (with the heads), with
and without caching the frozen layers below them (TrainConfig.cache_frozen_layers), for k = 1..6.

    python -m bench.layer_cache [--quick] [--device auto|cpu|cuda] [--out bench/layer_cache.json]

`make bench` runs it first (its JSON, bench/layer_cache.json, goes into the appendix beside the report).

A real `Trainer.fit` on SST-2 (512 training sentences, batch 16, 30 steps, dynamic padding in length buckets); a
callback stamps the end of every step, and a step's time is the median interval between stamps after
the first (warm-up) step. The cached trainer computes its frozen layers' output before the fit, timed
on its own as `build_s` (hashing the frozen weights, running them once over the training rows); the
process-wide store is emptied before each cached run, so every build is a real one. At k = 6 only the
embeddings are frozen, too little to cache (`level` 0): both runs are the same. Every run uses the
book's precision on this machine (`book_precision`: bf16 autocast where it is native). Writes
{"meta": the machine, the precision, rows and steps; "rows": [{k, level, uncached_s_per_step,
cached_s_per_step, build_s, speedup}]}; --quick runs tiny settings that only show the script works
(the numbers mean nothing) and writes under bench/out/.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from mtl_helpers import Callback, MultiTaskModel, Trainer, TrainConfig, load_encoder, load_task, pick_device  # noqa: E402
from mtl_helpers.encoder import book_precision  # noqa: E402
from mtl_helpers.groups import top_groups, train_only  # noqa: E402
from mtl_helpers.layer_cache import LayerCache, clear_shared  # noqa: E402

from .machine import machine_description  # noqa: E402

BATCH_SIZE = 16


class StepClock(Callback):
    """The time at the end of every step (after the device finished it)."""

    order = 100

    def __init__(self, device: torch.device):
        self.device, self.stamps = device, []

    def on_step_end(self, trainer, step) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())

    def seconds_per_step(self) -> float:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        return statistics.median(gaps) if gaps else float("nan")


def timed_run(encoder, tokenizer, task, k: int, cached: bool, steps: int, device: str) -> dict:
    """One fit of `steps` steps training the top k layers and the head; its seconds per step and build time."""
    model = MultiTaskModel.for_tasks(copy.deepcopy(encoder), [task], seed=0)
    train_only(model, *top_groups(model, k), "heads")
    config = TrainConfig(
        batch_size=BATCH_SIZE,
        lr=1e-4,
        eval_every=None,
        progress=False,
        cache_frozen_layers=cached,
        device=device,
        precision=book_precision(pick_device(device)),
    )
    clock = StepClock(pick_device(device))
    trainer = Trainer(model, tokenizer, [task], config, callbacks=[clock])
    build, level = 0.0, 0
    if isinstance(trainer.data, LayerCache):
        clear_shared()
        build, level = trainer.data.prepare(task.name, "train"), trainer.data.level()
    per_epoch = -(-len(task.splits["train"]) // BATCH_SIZE)
    trainer.fit(steps / per_epoch)
    return {"s_per_step": clock.seconds_per_step(), "build_s": build, "level": level}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings: proves the script runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="default: bench/layer_cache.json (--quick: bench/out/)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = "bench/out/layer_cache.json" if args.quick else "bench/layer_cache.json"
    rows, steps = (48, 3) if args.quick else (512, 30)
    task = load_task("sst2", max_train=rows, max_eval=64)
    encoder, tokenizer = load_encoder()
    results = []
    for k in range(1, 7):
        plain = timed_run(encoder, tokenizer, task, k, False, steps, args.device)
        cached = timed_run(encoder, tokenizer, task, k, True, steps, args.device)
        results.append(
            {
                "k": k,
                "level": cached["level"],
                "uncached_s_per_step": round(plain["s_per_step"], 5),
                "cached_s_per_step": round(cached["s_per_step"], 5),
                "build_s": round(cached["build_s"], 4),
                "speedup": round(plain["s_per_step"] / cached["s_per_step"], 3),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    report = {
        "meta": {
            **machine_description(),
            "precision": book_precision(pick_device(args.device)),
            "rows": rows,
            "steps": steps,
            "batch_size": BATCH_SIZE,
            "quick": args.quick,
        },
        "rows": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
