"""Which examples each optimizer step sees: a plan per epoch, a list of steps, each a list of indices.

The plan is a pure function of (seed, epoch), so a resumed run needs only its step count to continue exactly
where the interrupted one stopped. The default plan shuffles everything; a staged plan (sDPO chunks,
Curry-DPO curricula) shuffles within each stage, keeps the stages in order, and never lets a step straddle
two stages."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Plan = Callable[[int], list[list[int]]]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=gen).tolist()


def steps_per_epoch(n: int, batch_size: int, grad_accum: int) -> int:
    return math.ceil(n / (batch_size * grad_accum))


def _chunk(order: list[int], size: int) -> list[list[int]]:
    return [order[i:i + size] for i in range(0, len(order), size)]


def shuffled_plan(n: int, batch_size: int, grad_accum: int, seed: int) -> Plan:
    return lambda epoch: _chunk(epoch_order(n, seed, epoch), batch_size * grad_accum)


def staged_plan(stages: list[list[int]], batch_size: int, grad_accum: int, seed: int) -> Plan:
    def plan(epoch: int) -> list[list[int]]:
        steps = []
        for s, stage in enumerate(stages):
            order = [stage[i] for i in epoch_order(len(stage), seed + 7919 * s, epoch)]
            steps += _chunk(order, batch_size * grad_accum)
        return steps

    return plan


def stage_end_steps(stages: list[list[int]], batch_size: int, grad_accum: int) -> list[int]:
    """Within an epoch, the number of steps done when each stage ends."""
    ends, done = [], 0
    for stage in stages:
        done += steps_per_epoch(len(stage), batch_size, grad_accum)
        ends.append(done)
    return ends
