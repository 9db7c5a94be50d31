"""prefalign's packed engine against its own padded layout: the same DPO run on the toy task, alternating
layouts in one process, printing seconds per run, pairs/s and the ratio.

    python bench/engine_layouts.py [--steps 100] [--repeats 2]

This is not the comparison with TRL that issue 4 asks for (bench/dpo_throughput.py, still to come); it
isolates what prefix sharing, packing and the chunked LM head save on the same loop."""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from prefalign.quickstart import quickstart_config
from prefalign.toy.preference_data import write_toy_pairs
from prefalign.training.preference import train_preference


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=1200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prefalign-bench-"))
    data = write_toy_pairs(work / "data", n_prompts=args.prompts)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    losses: dict[bool, float] = {}
    for _ in range(args.repeats):
        for packed in (False, True):
            cfg = quickstart_config(work / f"run-{packed}", steps=args.steps)
            cfg.data.train = str(data)
            cfg.trainer.progress = False
            cfg.engine.packed = packed
            run = train_preference(cfg, console=Console(quiet=True), overwrite=True)
            seconds[packed].append(run.loop.seconds)
            losses[packed] = run.loop.last_metrics["loss"]
    pairs = args.steps * 16
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for packed in (False, True):
        best = min(seconds[packed])
        print(f"{'packed' if packed else 'padded'}: best {best:.1f}s of {seconds[packed]}, {pairs / best:.1f} pairs/s, "
              f"final loss {losses[packed]:.5f}")
    print(f"speedup packed/padded: {min(seconds[False]) / min(seconds[True]):.2f}x")


if __name__ == "__main__":
    main()
