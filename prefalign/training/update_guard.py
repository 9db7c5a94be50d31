"""A step with a finite loss and gradient can still ruin the weights: leave non-finite values (an
overflowing optimizer moment), or finite ones far from anything trained (trainer.lr=1e6 multiplies their norm
by about a million in one step). Such a step, one that leaves a non-finite weight or multiplies the trained
weights' norm by more than `trainer.max_weight_growth`, stops the run, or is undone from a copy taken just
before it (`trainer.on_nonfinite_update: undo`, which costs that copy's memory on every step); it is never
checkpointed or exported either way."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributed.tensor import DTensor


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


@dataclass
class Snapshot:
    """The trained parameters and their optimizer state before a step (this process's shards under FSDP2)."""

    params: list[torch.Tensor]
    state: list[dict]


def take_snapshot(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> Snapshot:
    def copy(value: object) -> object:
        return value.detach().clone() if isinstance(value, torch.Tensor) else value

    return Snapshot([p.detach().clone() for p in params],
                    [{k: copy(v) for k, v in optimizer.state.get(p, {}).items()} for p in params])


@torch.no_grad()
def restore(snapshot: Snapshot, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
    for p, saved, state in zip(params, snapshot.params, snapshot.state):
        p.copy_(saved)
        if state:
            optimizer.state[p] = state
        else:
            optimizer.state.pop(p, None)


@torch.no_grad()
def count_nonfinite(params: list[torch.nn.Parameter]) -> int:
    """Non-finite values in this process's parameters (a sum over processes is the caller's)."""
    if not params:
        return 0
    return int(sum((~torch.isfinite(_local(p))).sum() for p in params).item())


@torch.no_grad()
def squared_norm(params: list[torch.nn.Parameter]) -> float:
    """The sum of squares of this process's parameters, in float64 (a sum over processes is the caller's)."""
    if not params:
        return 0.0
    return float(sum(torch.linalg.vector_norm(_local(p), dtype=torch.float64) ** 2 for p in params))
