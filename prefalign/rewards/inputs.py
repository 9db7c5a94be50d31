"""Text -> token ids for a reward model. Decoders read [prompt | response] tokenized as for the policy (chat
template, exact boundary, EOS, truncation), so pairs can share their prompt in packed batches; encoders read
the prompt and the response as a text pair ([CLS] prompt [SEP] response [SEP]). Truncation keeps the
prompt's end for both (the last turn is the one the response answers); `too_long: reject` refuses instead."""

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
    and after the second, read off the tokenizer's own encoding of a pair of one-token texts."""

    before: list[int]
    between: list[int]
    after: list[int]

    @classmethod
    def of(cls, tokenizer: object) -> PairTemplate:
        a, b = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("a", "b"))
        ids = list(tokenizer("a", "b")["input_ids"])
        if len(a) != 1 or len(b) != 1 or ids.count(a[0]) != 1 or ids.count(b[0]) != 1:
            raise ValueError("cannot read this tokenizer's text-pair template (\"a\" and \"b\" are not single tokens)")
        i, j = ids.index(a[0]), ids.index(b[0])
        return cls(ids[:i], ids[i + 1:j], ids[j + 1:])

    @property
    def specials(self) -> int:
        return len(self.before) + len(self.between) + len(self.after)

    def frame(self, first: list[int], second: list[int]) -> list[int]:
        return self.before + first + self.between + second + self.after


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

    def _text_pair(self, prompt: Text, response: Text, ref: RowRef | None = None) -> list[int]:
        """[specials] prompt [specials] response [specials] in max_length: over it, the prompt loses its start
        (down to half the budget), then the response its end."""
        p, r = (list(self.tokenizer(plain_text(t), add_special_tokens=False)["input_ids"]) for t in (prompt, response))
        if self.max_prompt_length is not None:
            p = p[max(0, len(p) - self.max_prompt_length):]
        budget = self.max_length - self.template.specials
        if len(p) + len(r) > budget:
            if self.too_long == "reject" and ref is not None:
                raise DataError(ref, None, f"{len(p) + len(r) + self.template.specials} tokens exceed "
                                f"max_length={self.max_length}", "too_long")
            keep = max(budget - len(r), min(len(p), budget // 2))
            p = p[len(p) - keep:] if keep > 0 else []
            r = r[:budget - len(p)]
            self.truncated += 1
        return self.template.frame(p, r)

    def pair(self, pair: PreferencePair) -> TokenizedPair:
        if self.kind == "decoder":
            return self.completions.pair(pair)
        chosen = self._text_pair(pair.prompt, pair.chosen, pair.ref)
        rejected = self._text_pair(pair.prompt, pair.rejected, pair.ref)
        if chosen == rejected:
            raise DataError(pair.ref, "rejected", "tokenizes to the same ids as chosen", "identical_pair")
        return TokenizedPair([], chosen, rejected, pair.ref, pair.extras)

    def single(self, prompt: Text, response: Text) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) of one sequence to score; too long, it is truncated."""
        if self.kind == "decoder":
            encoded = self.completions.encode(prompt, response)
            prompt_ids, (completion,), _ = self.completions.fit(encoded.prompt_ids, [encoded.completion_ids], "")
            return prompt_ids, completion
        return [], self._text_pair(prompt, response)

    def batch(self, prompts: list[Text], responses: list[Text]) -> TokenBatch:
        return pad_sequences([self.single(p, r) for p, r in zip(prompts, responses)], self.pad_id)


def with_extras(pair: TokenizedPair, **values: float) -> TokenizedPair:
    return replace(pair, extras={**pair.extras, **values})

