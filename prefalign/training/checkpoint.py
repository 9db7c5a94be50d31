"""Atomic checkpoints (written under a temporary name, then renamed), keep-last-N, exact resume.

A checkpoint holds the trainable parameters (safetensors), the optimizer state keyed by parameter name
(tensors only, read back with `weights_only=True`, so nothing is unpickled), the scheduler state and the
loop's counters with the batch source's state (JSON). Everything is gathered whole, so a checkpoint written
by N processes (sharded or not) resumes in M. The data order and the per-step RNG seed are functions of the
step, so nothing else is needed to continue exactly."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prefalign.atomic_files import replace_dir

PREFIX = "step-"
NAME = re.compile(rf"{PREFIX}\d{{8}}")
COMPLETE = "state.json"


@dataclass
class Checkpoint:
    """What a checkpoint holds, gathered whole on the CPU: the same files at any world size."""

    trainable: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    state: dict
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def save_checkpoint(ckpt_dir: Path, step: int, ckpt: Checkpoint, keep_last: int) -> Path:
    """`ckpt.tensors`: more tensor files (name -> tensors) that belong to the checkpoint, such as the weights
    of a reference model that training updates. `state.json` is written last: a folder without it is not a
    checkpoint."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"{PREFIX}{step:08d}"
    tmp = ckpt_dir / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in ckpt.trainable.items()}, tmp / "trainable.safetensors")
    torch.save(ckpt.optimizer, tmp / "optimizer.pt")
    (tmp / "scheduler.json").write_text(json.dumps(ckpt.scheduler))
    for name, tensors in ckpt.tensors.items():
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp / f"{name}.safetensors")
    (tmp / COMPLETE).write_text(json.dumps({"step": step, **ckpt.state}))
    replace_dir(tmp, final)
    for old in list_checkpoints(ckpt_dir)[:-keep_last]:
        remove_dir(old)
    for leftover in ckpt_dir.glob(f".deleting-{PREFIX}*"):  # a prune a kill interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    return final


def remove_dir(path: Path) -> None:
    """Rename first, then delete: a kill midway leaves a hidden folder, never a half-deleted checkpoint."""
    doomed = path.with_name(f".deleting-{path.name}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints only, oldest first: `step-NNNNNNNN` folders holding `state.json` (so neither
    a `step-N.old` left between the renames of a replace nor a folder a prune did not finish)."""
    if not ckpt_dir.exists():
        return []
    return sorted(p for p in ckpt_dir.iterdir() if NAME.fullmatch(p.name) and (p / COMPLETE).is_file())


def read_checkpoint(path: Path, trainable_names: set[str], tensor_files: list[str]) -> Checkpoint:
    """The checkpoint at `path`, checked against the model's trainable parameter names."""
    trainable = load_file(path / "trainable.safetensors")
    if set(trainable) != trainable_names:
        differ = sorted(trainable_names ^ set(trainable))[:5]
        raise ValueError(f"checkpoint {path} does not match the model's trainable parameters (e.g. {differ})")
    return Checkpoint(trainable, torch.load(path / "optimizer.pt", weights_only=True),
                      json.loads((path / "scheduler.json").read_text()), json.loads((path / "state.json").read_text()),
                      {name: load_file(path / f"{name}.safetensors") for name in tensor_files})
