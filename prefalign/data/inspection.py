"""What a tokenizer makes of a preference file before any training: rows after the chat template with the
prompt/completion boundary shown, length statistics, how many pairs `max_length` would cut, and whether the
tokenizer reads the text at all (unknown tokens). `prefalign data inspect` prints it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from prefalign.data.examples import PreferencePair
from prefalign.data.tokenize import CompletionTokenizer


@dataclass
class Preview:
    where: str  # file and line (or record)
    prompt: str  # the prompt's tokens decoded: the chat template as the model sees it
    chosen: str
    rejected: str


@dataclass
class Inspection:
    pairs: int
    lengths: dict[str, list[int]]  # prompt, chosen, rejected: tokens per pair, before truncation
    over_max_length: int  # pairs whose prompt + longer completion exceed max_length
    max_length: int
    unknown_rows: list[str] = field(default_factory=list)  # where the pairs holding the unknown token are
    unknown_tokens: int = 0
    tokens: int = 0
    previews: list[Preview] = field(default_factory=list)

    def stats(self, part: str) -> str:
        x = np.array(self.lengths[part])
        return (f"{part}: min {x.min()}, median {np.median(x):.0f}, p95 {np.percentile(x, 95):.0f}, max {x.max()}"
                if len(x) else f"{part}: none")

    def unknown_warning(self) -> str | None:
        if not self.unknown_rows:
            return None
        return (f"warning: {len(self.unknown_rows)} of {self.pairs} pairs hold the tokenizer's unknown token "
                f"({self.unknown_tokens} of {self.tokens} tokens, {100 * self.unknown_tokens / self.tokens:.1f}%; "
                f"first: {self.unknown_rows[0]}): this tokenizer cannot read that text, and the model would "
                "train on <unk> in its place")


def inspect_pairs(pairs: list[PreferencePair], tokenizer: object, max_length: int, n_preview: int = 3) -> Inspection:
    """Tokenize every pair (no truncation, to measure) and preview the first `n_preview` as the model sees them."""
    encoder = CompletionTokenizer(tokenizer, max_length, too_long="reject")  # "reject": measure, never cut
    unk = tokenizer.unk_token_id  # None for byte-level tokenizers, which read any text
    out = Inspection(len(pairs), {"prompt": [], "chosen": [], "rejected": []}, 0, max_length)
    for pair in pairs:
        chosen, rejected = (encoder.encode(pair.prompt, c, pair.ref) for c in (pair.chosen, pair.rejected))
        ids = chosen.prompt_ids + chosen.completion_ids + rejected.completion_ids
        out.lengths["prompt"].append(len(chosen.prompt_ids))
        out.lengths["chosen"].append(len(chosen.completion_ids))
        out.lengths["rejected"].append(len(rejected.completion_ids))
        out.over_max_length += len(chosen.prompt_ids) + max(len(chosen.completion_ids),
                                                            len(rejected.completion_ids)) > max_length
        out.tokens += len(ids)
        if unk is not None and unk in ids:
            out.unknown_rows.append(str(pair.ref))
            out.unknown_tokens += ids.count(unk)
        if len(out.previews) < n_preview:
            out.previews.append(Preview(str(pair.ref), *(tokenizer.decode(ids) for ids in (
                chosen.prompt_ids, chosen.completion_ids, rejected.completion_ids))))
    return out
