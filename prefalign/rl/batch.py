"""Rollout groups -> policy batches.

A group is one prompt with its G sampled completions and, per completion token, what the rollout computed
once: the sampling policy's and the reference's log-probs, the advantages, and PPO's values and returns. In
the packed layout a group is one prefix-shared group (the prompt encoded once for all G completions); the
per-token values are laid out on the same grid as the log-probs the engine returns for that layout (packed:
column j is completion token j; padded: the position that predicts it)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch

from prefalign.data.collate import TokenBatch, pad_sequences
from prefalign.data.packing import Group, PackedBatch, pack_groups

PER_TOKEN = ("old", "ref", "advantages", "old_values", "returns")


@dataclass
class RolloutGroup:
    """One prompt's G samples. Per-token lists are [G][completion length], set when the rollout is made;
    those that nothing needs stay None (`old` when each rollout makes one step: old = current)."""

    prompt_ids: list[int]
    completions: list[list[int]]
    rewards: list[float]
    advantages: list[list[float]] | None = None
    old: list[list[float]] | None = None
    ref: list[list[float]] | None = None
    old_values: list[list[float]] | None = None
    returns: list[list[float]] | None = None
    dense_reward: list[list[float]] | None = None  # RTO's token rewards (logged; folded into the advantages)
    demos: list[bool] | None = None  # SRFT: which members are demonstrations rather than samples

    def demo_flags(self) -> list[bool]:
        """Per member: a demonstration (True) or one of the policy's samples."""
        return self.demos or [False] * len(self.completions)

    def as_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class PolicyBatch:
    """G x B sequences, group-major (row g*G + j is sample j of the batch's group g); per-token tensors
    [N, T] on the engine's grid. `kl_coef` is the rollout's KL coefficient (adaptive or fixed)."""

    tokens: TokenBatch | PackedBatch
    index: torch.Tensor  # [B] the groups' positions in their rollout
    mask: torch.Tensor
    advantages: torch.Tensor | None = None
    old: torch.Tensor | None = None
    ref: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    kl_coef: float = 0.0
    starts: list[int] = field(default_factory=list)  # each sequence's first completion column on the grid
    rewards: torch.Tensor | None = None  # [N] outcome rewards
    demo: torch.Tensor | None = None  # [N] 1 for a demonstration (SRFT), else 0
    entropy: float = 0.0  # the sampling policy's mean token entropy on the rollout's own samples (SRFT)

    def rows(self, values: torch.Tensor) -> list[list[float]]:
        """A grid [N, T] back to per-sequence lists along each completion."""
        lengths = self.mask.sum(-1).long().tolist()
        return [values[i, s:s + n].float().tolist() for i, (s, n) in enumerate(zip(self.starts, lengths))]

    @property
    def num_sequences(self) -> int:
        return int(self.mask.shape[0])

    def to(self, device: torch.device | str) -> PolicyBatch:
        moved = {name: None if getattr(self, name) is None else getattr(self, name).to(device)
                 for name in (*PER_TOKEN, "rewards", "demo")}
        return replace(self, tokens=self.tokens.to(device), index=self.index.to(device), mask=self.mask.to(device),
                       **moved)


def grid(rows: list[list[float]], starts: list[int], width: int) -> torch.Tensor:
    """Per-token values of each sequence placed from column starts[i] in an [N, width] zero grid."""
    out = torch.zeros(len(rows), width)
    for i, (row, start) in enumerate(zip(rows, starts)):
        out[i, start:start + len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def sequence_layout(groups: list[RolloutGroup], pad_id: int, packed: bool,
                    capacity: int | None = None) -> tuple[TokenBatch | PackedBatch, list[int], int]:
    """The token batch of the groups' sequences (group-major), where each completion's first token sits on
    the per-token grid, and the grid's width."""
    sizes = [len(g.completions) for g in groups]
    if packed:
        first = [sum(sizes[:i]) for i in range(len(groups))]
        parts = [Group(g.prompt_ids, g.completions, list(range(s, s + n))) for g, s, n in zip(groups, first, sizes)]
        tokens = pack_groups(parts, sum(sizes), pad_id, capacity)
        width = max(len(c) for g in groups for c in g.completions)
        return tokens, [0] * sum(sizes), width
    rows = [(g.prompt_ids, c) for g in groups for c in g.completions]
    tokens = pad_sequences(rows, pad_id)
    return tokens, [len(p) - 1 for p, _ in rows], tokens.input_ids.shape[1] - 1


def collate_groups(groups: list[RolloutGroup], index: list[int], pad_id: int, packed: bool = True,
                   capacity: int | None = None, kl_coef: float = 0.0, entropy: float = 0.0) -> PolicyBatch:
    tokens, starts, width = sequence_layout(groups, pad_id, packed, capacity)
    mask = grid([[1.0] * len(c) for g in groups for c in g.completions], starts, width)
    per_token = {}
    for name in PER_TOKEN:
        values = [getattr(g, name) for g in groups]
        per_token[name] = None if any(v is None for v in values) else grid([r for v in values for r in v], starts, width)
    rewards = torch.tensor([r for g in groups for r in g.rewards], dtype=torch.float32)
    demo = torch.tensor([float(d) for g in groups for d in g.demo_flags()])
    return PolicyBatch(tokens, torch.tensor(index, dtype=torch.long), mask, kl_coef=kl_coef, starts=starts,
                       rewards=rewards, demo=demo, entropy=entropy, **per_token)
