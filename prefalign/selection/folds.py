"""Out-of-fold DPO margins, for Selective DPO's example difficulty: the pairs split into K folds, one small DPO
run from the reference on every fold but one, and each pair scored by the run that never saw it, as
b (d_w - d_l) against the reference. The validation loss -log s(b h) falls as that margin rises."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from prefalign.atomic_files import write_text_atomic
from prefalign.data.examples import PreferencePair
from prefalign.data.readers import read_records


@dataclass(frozen=True)
class FoldRuns:
    """How each fold's reference run trains: DPO from `reference` for `steps` steps of `batch_size` pairs."""

    reference: str
    folds: int = 2
    steps: int = 100
    lr: float = 5e-6
    batch_size: int = 16
    beta: float = 0.1
    max_length: int = 512
    seed: int = 0


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """[n] fold index of each pair: a seeded permutation cut into `folds` near-equal parts."""
    if not 2 <= folds <= n:
        raise ValueError(f"--folds {folds}: needs 2 to {n} (the number of pairs)")
    which = np.empty(n, dtype=int)
    for k, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(n), folds)):
        which[part] = k
    return which


def _write_rows(path: Path, records: dict, rows: list[int]) -> Path:
    write_text_atomic(path, "".join(json.dumps(records[r].fields) + "\n" for r in rows))
    return path


def _train_fold(runs: FoldRuns, data: Path, out: Path) -> str:
    from prefalign.config.schema import DataConfig, LossTerm, ModelConfig, TrainConfig, TrainerConfig
    from prefalign.training.preference import train_preference

    cfg = TrainConfig(model=ModelConfig(name_or_path=runs.reference),
                      data=DataConfig(train=str(data), eval_fraction=0.0, max_length=runs.max_length),
                      loss=[LossTerm(name="dpo", beta=runs.beta)],
                      trainer=TrainerConfig(output_dir=str(out), seed=runs.seed, max_steps=runs.steps, lr=runs.lr,
                                            batch_size=runs.batch_size, progress=False, save_every=0))
    return str(train_preference(cfg, console=Console(quiet=True), overwrite=True).outputs["model"])


def out_of_fold_margins(source: str, pairs: list[PreferencePair], runs: FoldRuns) -> np.ndarray:
    """[N] each pair's implicit DPO margin under the fold run not trained on it (runs in a temporary folder)."""
    from prefalign.rewards.evaluate import score_with_implicit_reward

    records = {r.ref.row: r for r in read_records(source)}
    rows = [p.ref.row for p in pairs]
    which = fold_of(len(pairs), runs.folds, runs.seed)
    margins = np.full(len(pairs), np.nan)
    with tempfile.TemporaryDirectory(prefix="prefalign-folds-") as tmp:
        for k in range(runs.folds):
            held = np.flatnonzero(which == k)
            train = _write_rows(Path(tmp) / f"train-{k}.jsonl", records, [rows[i] for i in np.flatnonzero(which != k)])
            model = _train_fold(runs, train, Path(tmp) / f"run-{k}")
            scored = score_with_implicit_reward(model, runs.reference, str(_write_rows(
                Path(tmp) / f"held-{k}.jsonl", records, [rows[i] for i in held])), runs.beta, runs.max_length)
            if len(scored.margins) != len(held):
                raise ValueError("a scorer could not read every pair (rows too long or malformed); fix or filter "
                                 "them first")
            margins[held] = scored.margins
    return margins
