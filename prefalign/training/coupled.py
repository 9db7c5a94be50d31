"""Losses that couple the examples of a step (KTO's z0, beta-DPO's batch beta, AOT's sort, BCO's baseline),
made independent of how the step is split into micro-batches and processes.

Such a loss L(z_1 .. z_N) depends on the parameters only through each example's loss inputs z_j (the policy's
summed log-probs). Its exact gradient is sum_j (dL/dz_j) dz_j/dtheta, so a step runs in two passes:
  1. without gradient, every micro-batch's inputs on every process; they are gathered, L is evaluated once
     on all N examples of the step, and g_j = dL/dz_j is taken by autograd on that small set of tensors;
  2. each micro-batch recomputes its z_j with gradient and backpropagates sum_j g_j z_j, its share of L.
The cost is one more forward pass without gradient per step, and only for these losses; running statistics
(BCO, beta-DPO) are updated once per step, identically on every process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from prefalign.training.distributed import Processes

Inputs = Any  # PairLogps | ListLogps | UnpairedLogps


@dataclass
class Share:
    """One micro-batch's part of a coupled step: dL/dz for its rows, its share of L, metrics to log."""

    grads: dict[str, torch.Tensor]
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]

    def surrogate(self, inputs: Inputs) -> torch.Tensor:
        """Value: the share of L; gradient: sum_j g_j dz_j/dtheta. A filler's share (no grads) still
        touches the inputs, so its backward reaches the parameters as every other rank's does."""
        linear = sum((self.grads[name] * getattr(inputs, name)).sum() if name in self.grads
                     else 0.0 * getattr(inputs, name).sum() for name in inputs.policy_fields)
        return self.loss + linear - linear.detach()


def _rows(inputs: Inputs) -> int:
    return getattr(inputs, inputs.policy_fields[0]).shape[0]


def _map_tensors(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    """A copy of `inputs` with fn applied to every per-example tensor (and data column)."""
    changed: dict[str, Any] = {}
    for f in fields(inputs):
        value = getattr(inputs, f.name)
        if isinstance(value, torch.Tensor):
            changed[f.name] = fn(value)
        elif isinstance(value, dict):
            changed[f.name] = {k: fn(v) for k, v in value.items()}
    return replace(inputs, **changed)


def concat(parts: list[Inputs]) -> Inputs:
    first = parts[0]
    stacked: dict[str, Any] = {}
    for f in fields(first):
        values = [getattr(p, f.name) for p in parts]
        if isinstance(values[0], torch.Tensor):
            stacked[f.name] = torch.cat(values)
        elif isinstance(values[0], dict):
            stacked[f.name] = {k: torch.cat([v[k] for v in values]) for k in values[0]}
    return replace(first, **stacked)


def step_shares(parts: list[Inputs], n_fillers: int, loss_fn: Callable[[Inputs], tuple[torch.Tensor, dict]],
                processes: Processes) -> list[Share]:
    """Pass 1 for this process's counted micro-batches `parts` (inputs taken without gradient): one Share
    per micro-batch, then zero shares for the fillers. `loss_fn` maps the whole step's inputs to per-example
    losses [N] and metrics; it is called once, on every process alike."""
    local = concat(parts)
    everyone, offset = local, 0
    if processes.world > 1:
        sizes = processes.gather_rows(getattr(local, local.policy_fields[0]))[1]
        offset = sum(sizes[:processes.rank])
        everyone = _map_tensors(local, lambda t: processes.gather_rows(t)[0])
    leaves = {name: getattr(everyone, name).detach().float().requires_grad_() for name in everyone.policy_fields}
    everyone = replace(everyone, **leaves)
    with torch.enable_grad():
        per_example, metrics = loss_fn(everyone)
        grads = torch.autograd.grad(per_example.sum(), list(leaves.values()), allow_unused=True)
    shares, start = [], offset
    for j, part in enumerate(parts):
        end = start + _rows(part)
        mine = {name: (g if g is not None else torch.zeros_like(leaves[name]))[start:end].to(getattr(part, name).dtype)
                for name, g in zip(leaves, grads)}
        # The step's metrics are logged once, with the first micro-batch of rank 0, so their mean is the step's.
        shown = metrics if (j == 0 and processes.rank == 0) else {}
        shares.append(Share(mine, per_example[start:end].detach().sum(), shown))
        start = end
    return shares + [Share({}, torch.zeros((), device=per_example.device), {}) for _ in range(n_fillers)]
