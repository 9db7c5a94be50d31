"""Text -> token ids for a reward model. Decoders read [prompt | response] tokenized as for the policy (chat
template, exact boundary, EOS, truncation), so pairs can share their prompt in packed batches; encoders read
the prompt and the response as a text pair ([CLS] prompt [SEP] response [SEP]), the pair's first part
(`[CLS] prompt [SEP]`) as the shared prompt ids and the rest as the completion, so the completion mask is the
tokenizer's segment 1 (its token type ids). Truncation keeps the prompt's end for both (the last turn is the
one the response answers); `too_long: reject` refuses instead."""

from __future__ import annotations

from dataclasses import dataclass, replace

from prefalign.data.collate import TokenBatch, pad_sequences
from prefalign.data.errors import DataError, RowRef
from prefalign.data.examples import PreferencePair, Text
from prefalign.data.tokenize import CompletionTokenizer, TokenizedPair


def plain_text(text: Text) -> str:
    """Messages as `role: content` lines, for encoders that have no chat template."""
    return text if isinstance(text, str) else "\n".join(f"{m['role']}: {m['content']}" for m in text)


@dataclass
class PairTemplate:
    """How an encoder's tokenizer frames a text pair: the special ids before the first text, between the two
    and after the second, read off the tokenizer's own encoding of a pair of one-token texts. `segments`: the
    tokenizer gives the second text and what follows it token type 1 (BERT, MiniLM, ELECTRA), where others
    (RoBERTa, DeBERTa-v2) give every token type 0."""

    before: list[int]
    between: list[int]
    after: list[int]
    segments: bool = False

    @classmethod
    def of(cls, tokenizer: object) -> PairTemplate:
        a, b = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("a", "b"))
        encoded = tokenizer("a", "b")
        ids = list(encoded["input_ids"])
        if len(a) != 1 or len(b) != 1 or ids.count(a[0]) != 1 or ids.count(b[0]) != 1:
            raise ValueError("cannot read this tokenizer's text-pair template (\"a\" and \"b\" are not single tokens)")
        i, j = ids.index(a[0]), ids.index(b[0])
        types = list(encoded.get("token_type_ids") or [0] * len(ids))
        if any(types) and types != [0] * j + [1] * (len(ids) - j):
            raise ValueError(f"this tokenizer's token type ids for a text pair ({types}) are not 0 up to the second "
                             "text and 1 from it; it is not supported as a reward-model encoder")
        return cls(ids[:i], ids[i + 1:j], ids[j + 1:], segments=any(types))

    @property
    def specials(self) -> int:
        return len(self.before) + len(self.between) + len(self.after)

    def frame(self, first: list[int], second: list[int]) -> list[int]:
        return self.before + first + self.between + second + self.after

    def parts(self, first: list[int], second: list[int]) -> tuple[list[int], list[int]]:
        """The framed pair split where segment 1 starts: (specials + first + specials, second + specials)."""
        return self.before + first + self.between, second + self.after


class RewardTokenizer:
    def __init__(self, tokenizer: object, kind: str, max_length: int, max_prompt_length: int | None = None,
                 too_long: str = "truncate") -> None:
        self.tokenizer = tokenizer
        self.kind = kind
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.too_long = too_long
        self.truncated = 0
        self.completions = CompletionTokenizer(tokenizer, max_length, max_prompt_length, too_long)
        self.template = PairTemplate.of(tokenizer) if kind == "encoder" else None

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def segment_ids(self) -> bool:
        """The tokenizer marks the response as segment 1 (the completion mask is its token type ids)."""
        return self.template is not None and self.template.segments

    def _ids(self, text: Text) -> list[int]:
        return list(self.tokenizer(plain_text(text), add_special_tokens=False)["input_ids"])

    def _text_pairs(self, prompt: Text, responses: list[Text], ref: RowRef | None = None,
                    ) -> tuple[list[int], list[list[int]]]:
        """One prompt framed with each response, in max_length: over it, the prompt loses its start (down to
        half the budget, the same cut for every response, so that they share it), then a response its end.
        Returns (specials + prompt + specials, [response + specials, ...])."""
        p, rs = self._ids(prompt), [self._ids(r) for r in responses]
        if self.max_prompt_length is not None:
            p = p[max(0, len(p) - self.max_prompt_length):]
        budget = self.max_length - self.template.specials
        longest = max(len(r) for r in rs)
        if len(p) + longest > budget:
            if self.too_long == "reject" and ref is not None:
                raise DataError(ref, None, f"{len(p) + longest + self.template.specials} tokens exceed "
                                f"max_length={self.max_length}", "too_long")
            keep = max(budget - longest, min(len(p), budget // 2))
            p = p[len(p) - keep:] if keep > 0 else []
            self.truncated += len(rs)  # the prompt is cut for all of them
            rs = [r[:budget - len(p)] for r in rs]
        first, _ = self.template.parts(p, [])
        return first, [self.template.parts(p, r)[1] for r in rs]

    def pair(self, pair: PreferencePair) -> TokenizedPair:
        if self.kind == "decoder":
            return self.completions.pair(pair)
        prompt, (chosen, rejected) = self._text_pairs(pair.prompt, [pair.chosen, pair.rejected], pair.ref)
        if chosen == rejected:
            raise DataError(pair.ref, "rejected", "tokenizes to the same ids as chosen", "identical_pair")
        return TokenizedPair(prompt, chosen, rejected, pair.ref, pair.extras)

    def single(self, prompt: Text, response: Text) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) of one sequence to score; too long, it is truncated."""
        if self.kind == "decoder":
            encoded = self.completions.encode(prompt, response)
            prompt_ids, (completion,), _ = self.completions.fit(encoded.prompt_ids, [encoded.completion_ids], "")
            return prompt_ids, completion
        first, (second,) = self._text_pairs(prompt, [response])
        return first, second

    def batch(self, prompts: list[Text], responses: list[Text]) -> TokenBatch:
        return pad_sequences([self.single(p, r) for p, r in zip(prompts, responses)], self.pad_id)


def with_extras(pair: TokenizedPair, **values: float) -> TokenizedPair:
    return replace(pair, extras={**pair.extras, **values})

