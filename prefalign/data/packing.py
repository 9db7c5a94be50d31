"""Prefix sharing and padding-free packing: token sequences -> packed rows with an attention layout.

A group is one prompt with the completions that follow it (a pair's chosen and rejected answers, a ranked
list, a labelled completion with KTO's mismatched one). It is laid out once as [prompt | c_1 | ... | c_k]:
every completion sees the prompt and itself only, and its position ids restart at the prompt's end, so the
model computes the prompt once. Groups are packed first-fit-decreasing into rows of `capacity` tokens
(default: the longest group), with a block-diagonal mask so nothing attends across groups.

For every completion token the layout records where it sits and which position predicts it: the previous
token of the same completion, or the prompt's last token for a completion's first token (in the packed order
that position is not adjacent for c_2..c_k). `slot` names the output sequence each token belongs to, in the
order of the padded layout, so both layouts give the same per-sequence log-probs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Group:
    prompt_ids: list[int]
    completions: list[list[int]]
    slots: list[int]  # output sequence index of each completion

    def __len__(self) -> int:
        return len(self.prompt_ids) + sum(map(len, self.completions))


@dataclass(frozen=True)
class Segment:
    """Positions [start, end) of one row, attending to [prefix_start, prefix_end) (its prompt; empty for a
    prompt) and causally to themselves."""

    start: int
    end: int
    prefix_start: int = 0
    prefix_end: int = 0


@dataclass
class SegmentLayout:
    rows: list[list[Segment]]
    width: int
    _masks: dict = field(default_factory=dict, repr=False)

    def mask(self, n: int, prefix: int, device: torch.device) -> torch.Tensor:
        """[n, prefix + n]: the prompt fully visible, the segment itself causal (shared by all layers)."""
        key = (n, prefix, device)
        if key not in self._masks:
            own = torch.tril(torch.ones(n, n, dtype=torch.bool, device=device))
            self._masks[key] = torch.cat([torch.ones(n, prefix, dtype=torch.bool, device=device), own], dim=1)
        return self._masks[key]


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [R, L]
    position_ids: torch.Tensor  # [R, L]
    attention_mask: torch.Tensor  # [R, 1, L, L] bool, True where a query may attend to a key
    token_at: torch.Tensor  # [M] flat index (row * L + col) of each scored completion token
    predict_at: torch.Tensor  # [M] flat index of the position whose output predicts that token
    slot: torch.Tensor  # [M] output sequence of each scored token
    num_sequences: int
    real_tokens: int
    layout: SegmentLayout  # the same visibility as attention_mask, segment by segment

    @property
    def num_tokens(self) -> int:
        return self.real_tokens

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.attention_mask.to(device),
                           self.token_at.to(device), self.predict_at.to(device), self.slot.to(device),
                           self.num_sequences, self.real_tokens, self.layout)


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bins of item indices, each summing to at most `capacity` (an item longer than that gets its own)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        target = next((b for b, r in enumerate(room) if r >= lengths[i]), None)
        if target is None:
            bins.append([i])
            room.append(capacity - lengths[i])
        else:
            bins[target].append(i)
            room[target] -= lengths[i]
    return bins


def pack_groups(groups: list[Group], num_sequences: int, pad_id: int, capacity: int | None = None) -> PackedBatch:
    lengths = [len(g) for g in groups]
    rows = first_fit_decreasing(lengths, max(capacity or 0, max(lengths)))
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    group_of = torch.full((len(rows), width), -1, dtype=torch.long)
    part_of = torch.zeros((len(rows), width), dtype=torch.long)
    token_at, predict_at, slot = [], [], []
    layout = SegmentLayout([[] for _ in rows], width)
    for r, row in enumerate(rows):
        start = r * width
        col = 0
        for g in row:
            group = groups[g]
            p = len(group.prompt_ids)
            ids[r, col:col + p] = torch.tensor(group.prompt_ids, dtype=torch.long)
            pos[r, col:col + p] = torch.arange(p)
            group_of[r, col:col + lengths[g]] = g
            last_prompt = col + p - 1
            prompt_start = col
            if p:
                layout.rows[r].append(Segment(col, col + p))
            col += p
            for j, (completion, s) in enumerate(zip(group.completions, group.slots)):
                n = len(completion)
                ids[r, col:col + n] = torch.tensor(completion, dtype=torch.long)
                pos[r, col:col + n] = torch.arange(p, p + n)
                part_of[r, col:col + n] = j + 1
                # With an empty prompt the first token has no predictor, as in the padded layout.
                at = torch.arange(start + col + (p == 0), start + col + n)
                before = at - 1
                if p > 0 and n > 0:
                    before[0] = start + last_prompt
                token_at.append(at)
                predict_at.append(before)
                slot.append(torch.full_like(at, s))
                if n:
                    layout.rows[r].append(Segment(col, col + n, prompt_start, prompt_start + p))
                col += n
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    same_group = group_of[:, :, None] == group_of[:, None, :]
    visible_part = (part_of[:, None, :] == 0) | (part_of[:, :, None] == part_of[:, None, :])
    mask = same_group & visible_part & causal
    mask |= torch.eye(width, dtype=torch.bool)  # padding attends to itself (no empty softmax rows)
    return PackedBatch(ids, pos, mask[:, None], torch.cat(token_at), torch.cat(predict_at), torch.cat(slot),
                       num_sequences, sum(lengths), layout)
