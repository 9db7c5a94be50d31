"""Token sequences -> right-padded tensors with a completion mask."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from prefalign.data.packing import Group, PackedBatch, pack_groups
from prefalign.data.tokenize import TokenizedPair


@dataclass
class TokenBatch:
    """Rows of prompt+completion tokens. `completion_mask[i, t]` is 1 where token t is a completion token."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device), self.completion_mask.to(device))

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


def pad_sequences(rows: list[tuple[list[int], list[int]]], pad_id: int) -> TokenBatch:
    """(prompt_ids, completion_ids) rows -> one right-padded TokenBatch."""
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    comp = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        ids[i, :n] = torch.tensor(p + c, dtype=torch.long)
        attn[i, :n] = 1
        comp[i, len(p):n] = 1
    return TokenBatch(ids, attn, comp)


@dataclass
class PairBatch:
    """B pairs as 2B rows: rows [0, B) are prompt+chosen, rows [B, 2B) prompt+rejected.

    `index` holds each pair's position in its dataset (for precomputed reference log-probs); `extras` holds
    numeric columns present on every pair of the batch."""

    tokens: TokenBatch | PackedBatch
    index: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_pairs(self) -> int:
        return int(self.index.numel())

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(self.tokens.to(device), self.index.to(device), {k: v.to(device) for k, v in self.extras.items()})


def collate_pairs(pairs: list[TokenizedPair], index: list[int], pad_id: int, packed: bool = False,
                  capacity: int | None = None) -> PairBatch:
    """`packed`: prefix-shared, packed rows (a joint pair's two prompts make two groups); else padded rows."""
    b = len(pairs)
    if packed:
        groups = []
        for i, p in enumerate(pairs):
            if p.rejected_prompt_ids is None:
                groups.append(Group(p.prompt_ids, [p.chosen_ids, p.rejected_ids], [i, b + i]))
            else:
                groups += [Group(p.prompt_ids, [p.chosen_ids], [i]), Group(p.rejected_prompt_ids, [p.rejected_ids], [b + i])]
        tokens = pack_groups(groups, 2 * b, pad_id, capacity)
    else:
        tokens = pad_sequences([p.rows[0] for p in pairs] + [p.rows[1] for p in pairs], pad_id)
    common = set.intersection(*(set(p.extras) for p in pairs)) if pairs else set()
    extras = {k: torch.tensor([p.extras[k] for p in pairs], dtype=torch.float32) for k in sorted(common)}
    return PairBatch(tokens, torch.tensor(index, dtype=torch.long), extras)


@dataclass
class ListBatch:
    """B ranked lists padded to k = the longest list: row b * k + j is prompt_b + response j of list b
    (best first). `valid[b, j]` is False for the padding slots, which repeat the list's last response."""

    tokens: TokenBatch | PackedBatch
    index: torch.Tensor
    valid: torch.Tensor

    @property
    def num_lists(self) -> int:
        return int(self.index.numel())

    def to(self, device: torch.device | str) -> ListBatch:
        return ListBatch(self.tokens.to(device), self.index.to(device), self.valid.to(device))

    @property
    def k(self) -> int:
        return int(self.valid.shape[1])


def collate_lists(lists: list, index: list[int], pad_id: int, packed: bool = False,
                  capacity: int | None = None) -> ListBatch:
    k = max(len(item.completions) for item in lists)
    groups = [Group(item.prompt_ids, item.completions + [item.completions[-1]] * (k - len(item.completions)),
                    [b * k + j for j in range(k)]) for b, item in enumerate(lists)]
    valid = [[j < len(item.completions) for j in range(k)] for item in lists]
    if packed:
        tokens = pack_groups(groups, len(lists) * k, pad_id, capacity)
    else:
        tokens = pad_sequences([(g.prompt_ids, c) for g in groups for c in g.completions], pad_id)
    return ListBatch(tokens, torch.tensor(index, dtype=torch.long), torch.tensor(valid))


@dataclass
class UnpairedBatch:
    """B labelled completions, then (for losses that need `kl_baseline`) B mismatched rows (prompt_i with
    another example's completion) from which KTO estimates the KL baseline z0."""

    tokens: TokenBatch | PackedBatch
    labels: torch.Tensor
    index: torch.Tensor

    @property
    def num_examples(self) -> int:
        return int(self.index.numel())

    def to(self, device: torch.device | str) -> UnpairedBatch:
        return UnpairedBatch(self.tokens.to(device), self.labels.to(device), self.index.to(device))


def mismatch_partners(sizes: list[int], seed: int) -> list[int]:
    """For each example of consecutive segments (training, then held-out), the index of the example whose
    completion it is paired with for KTO's KL estimate: a random cycle within each segment, so no example is
    its own partner (unless alone) and the pairing follows a random order rather than the file's, where
    the two completions of one prompt often sit side by side. A function of the dataset index alone, the
    pairing is the same however a step is split into micro-batches and processes."""
    rng = random.Random(seed)
    partners, start = [], 0
    for n in sizes:
        order = list(range(start, start + n))
        rng.shuffle(order)
        nxt = {a: b for a, b in zip(order, order[1:] + order[:1])}
        partners += [nxt[i] for i in range(start, start + n)]
        start += n
    return partners


def collate_unpaired(items: list, index: list[int], pad_id: int, packed: bool = False,
                     capacity: int | None = None, pool: Sequence | None = None,
                     partners: Sequence[int] | None = None, mismatched: bool = True) -> UnpairedBatch:
    """With `mismatched` (for KTO's KL estimate), B more rows follow the labelled ones: with `pool` (all
    examples) and `partners` (mismatch_partners over it), example `index[i]` is paired with the completion
    of `pool[partners[index[i]]]`; without them, with the next item of the batch."""
    n = len(items)
    if not mismatched:
        partner_ids: list = []
    elif pool is not None and partners is not None:
        partner_ids = [pool[partners[i]].completion_ids for i in index]
    else:
        partner_ids = [items[(i + 1) % n].completion_ids for i in range(n)]
    if packed:  # the labelled completion and the mismatched one share their prompt
        groups = [Group(e.prompt_ids, [e.completion_ids, *partner_ids[i:i + 1]], [i, n + i][:1 + mismatched])
                  for i, e in enumerate(items)]
        tokens = pack_groups(groups, n + len(partner_ids), pad_id, capacity)
    else:
        rows = [(e.prompt_ids, e.completion_ids) for e in items] + [(e.prompt_ids, m) for e, m in zip(items, partner_ids)]
        tokens = pad_sequences(rows, pad_id)
    return UnpairedBatch(tokens, torch.tensor([e.label for e in items]), torch.tensor(index, dtype=torch.long))


def fixed_batches(items: list, size: int, pad_id: int, first_index: int = 0,
                  collate: Callable[[list, list[int], int], object] = collate_pairs) -> list:
    """Consecutive batches in dataset order (for evaluation and reference precomputation)."""
    return [collate(items[i:i + size], list(range(first_index + i, first_index + i + len(items[i:i + size]))), pad_id)
            for i in range(0, len(items), size)]
