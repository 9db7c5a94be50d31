"""Batch sources: what hands the training loop the micro-batches of each optimizer step.

A source is asked for step k (0-based) and answers with this process's micro-batches of that step. The
dataset source walks a fixed dataset through a plan (shuffled, staged or curriculum: see data_order); an
online source samples from the current policy. A source's `state_dict` is checkpointed with the run, so a
resumed run is handed exactly the batches the interrupted one would have had.

Across processes a step's examples are split into contiguous shares, one per rank, with no duplicate and no
gap. Every rank runs the same number of micro-batches per step, because sharded models gather weights in
each forward pass: a rank whose share has fewer micro-batches gets *fillers*, real batches that keep the
collectives in step and whose loss counts zero."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prefalign.config.schema import TrainerConfig
from prefalign.training.data_order import Plan, shuffled_plan


@dataclass
class StepBatches:
    """One process's micro-batches of one step; the last `fillers` of them only keep the processes in step."""

    micro: list[Any]
    fillers: int = 0

    @property
    def counted(self) -> list[Any]:
        return self.micro[:len(self.micro) - self.fillers]


class BatchSource(Protocol):
    """Hands the loop each step's micro-batches. `num_steps`: the optimizer steps the run makes. `metrics`
    and the state are optional capabilities with do-nothing defaults."""

    num_steps: int

    def step(self, step: int) -> StepBatches:
        """This process's micro-batches of optimizer step `step` (0-based)."""

    def metrics(self) -> dict[str, float]:
        """What the source did for the last step (samples drawn, scorer calls, seconds), to log."""
        return {}

    def state_dict(self) -> dict:
        """JSON-serialisable state that a resumed run needs (a prompt cursor, counters, a buffer)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


def rank_shares(indices: list[int], world: int) -> list[list[int]]:
    """Contiguous shares whose sizes differ by at most one, in rank order; together exactly `indices`."""
    base, extra = divmod(len(indices), world)
    shares, start = [], 0
    for r in range(world):
        end = start + base + (r < extra)
        shares.append(indices[start:end])
        start = end
    return shares


def split_step(indices: list[int], micro_size: int, rank: int, world: int) -> tuple[list[list[int]], int]:
    """This rank's micro-batches of one step's indices, and how many of them are fillers. Micro-batches hold
    at most `micro_size` examples; every rank gets as many as the largest share needs."""
    shares = rank_shares(indices, world)
    count = max(1, math.ceil(len(shares[0]) / micro_size))
    own = shares[rank]
    micro = [own[i:i + micro_size] for i in range(0, len(own), micro_size)]
    filler = own[:1] or indices[:1]
    fillers = count - len(micro)
    return micro + [filler] * fillers, fillers


class DatasetSource(BatchSource):
    """A fixed dataset walked through a plan, epoch after epoch. The plan is a pure function of (seed, epoch),
    so the state is only the step the loop asks for: nothing else to save."""

    def __init__(self, examples: Sequence[Any], collate: Callable[[list[Any], list[int]], Any], cfg: TrainerConfig,
                 plan: Plan | None = None, rank: int = 0, world: int = 1) -> None:
        self.examples, self.collate = examples, collate
        self.plan = plan or shuffled_plan(len(examples), cfg.batch_size, cfg.grad_accum, cfg.seed)
        self.micro_size = cfg.micro_batch_size or cfg.batch_size
        self.rank, self.world = rank, world
        self._epoch, self._steps = 0, self.plan(0)  # built once per epoch rather than once per step
        self.per_epoch = len(self._steps)
        self.num_steps = cfg.max_steps or cfg.epochs * self.per_epoch

    def step_indices(self, step: int) -> list[int]:
        """The dataset indices of step `step` over all processes."""
        epoch, position = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._steps = epoch, self.plan(epoch)
        return self._steps[position]

    def step(self, step: int) -> StepBatches:
        micro, fillers = split_step(self.step_indices(step), self.micro_size, self.rank, self.world)
        return StepBatches([self.collate([self.examples[i] for i in idx], idx) for idx in micro], fillers)
