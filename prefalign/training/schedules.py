"""Reference-model and data-order schedules: TR-DPO, sDPO and Curry-DPO (see ScheduleConfig)."""

from __future__ import annotations

import random
from collections import defaultdict

import torch

from prefalign.config.schema import ScheduleConfig
from prefalign.data.errors import DataError
from prefalign.models.reference import FrozenCopyReference


def chunk_stages(n: int, num_chunks: int, seed: int) -> list[list[int]]:
    """sDPO: the examples shuffled once and cut into `num_chunks` consecutive chunks."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return consecutive_stages(order, num_chunks)


def consecutive_stages(order: list[int], num_stages: int) -> list[list[int]]:
    """`order` cut into `num_stages` consecutive stages of equal size (the last one shorter)."""
    size = -(-len(order) // num_stages)
    return [order[i:i + size] for i in range(0, len(order), size)]


def curriculum_stages(pairs: list) -> list[list[int]]:
    """Curry-DPO: the pairs of each prompt (source row) ranked by score gap, largest first; stage j holds the
    j-th pair of every prompt that has one."""
    by_row: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        if "score_chosen" not in p.extras or "score_rejected" not in p.extras:
            raise DataError(p.ref, "score_chosen", "the curriculum orders pairs by score gap; this pair has no scores "
                            "(use rated data)", "missing_column")
        by_row[p.ref.row].append(i)
    stages: list[list[int]] = []
    for members in by_row.values():
        members.sort(key=lambda i: -(pairs[i].extras["score_chosen"] - pairs[i].extras["score_rejected"]))
        for j, i in enumerate(members):
            if j == len(stages):
                stages.append([])
            stages[j].append(i)
    if len(stages) < 2:
        raise DataError("data", None, "the curriculum needs several pairs per prompt; use rated data with "
                        "data.pairs.rule=all_pairs", "curriculum")
    return stages


def column_stages(pairs: list, column: str, num_stages: int) -> list[list[int]]:
    """Selective DPO's easy-to-hard order (Gao et al. 2025): the pairs sorted by a numeric column, smallest
    first (ties in data order), cut into `num_stages` consecutive stages."""
    for p in pairs:
        if column not in p.extras:
            raise DataError(p.ref, column, "schedule.stage_column orders pairs by this numeric column; this pair "
                            "has none", "missing_column")
    return consecutive_stages(sorted(range(len(pairs)), key=lambda i: pairs[i].extras[column]), num_stages)


class ReferenceUpdates:
    """After each step: TR-DPO's periodic soft/hard update, and the reset at each stage's end (sDPO, Curry).
    The reference weights are checkpointed so that a resumed run continues exactly."""

    def __init__(self, reference: FrozenCopyReference, cfg: ScheduleConfig, stage_ends: list[int], per_epoch: int) -> None:
        self.reference, self.cfg = reference, cfg
        self.stage_ends, self.per_epoch = set(stage_ends), per_epoch
        self.updates = 0

    @torch.no_grad()
    def sync(self, policy: torch.nn.Module, mix: float) -> None:
        for ref_p, p in zip(self.reference.model.parameters(), policy.parameters(), strict=True):
            ref_p.mul_(1 - mix).add_(p.detach().to(ref_p.dtype), alpha=mix)
        self.updates += 1

    def after_step(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        if self.cfg.reference_update != "none" and step % self.cfg.update_every == 0:
            self.sync(model, self.cfg.mix if self.cfg.reference_update == "soft" else 1.0)
        elif self.stage_ends and self.cfg.reset_reference_per_stage and ((step - 1) % self.per_epoch) + 1 in self.stage_ends:
            self.sync(model, 1.0)
        return {"reference/updates": float(self.updates)}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.reference.model.named_parameters()} | {"updates": torch.tensor(self.updates)}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for n, p in self.reference.model.named_parameters():
            p.copy_(tensors[n])
        self.updates = int(tensors["updates"])
