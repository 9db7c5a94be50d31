"""Examples -> token sequences, with the prompt/completion boundary exact.

Plain text: the prompt and prompt+completion are tokenized; the completion is what follows the prompt's
tokens. Conversational: the tokenizer's chat template renders the prompt (with the generation prompt) and the
whole conversation. When the prompt's tokens are not a prefix of the whole (a BOS added twice, a template that
rewrites earlier turns, a merge across the boundary) we warn and fall back to prompt tokens + completion
tokens tokenized alone, which keeps the boundary exact at the cost of a tokenization the model may not see at
inference. EOS ends every completion exactly once.

Truncation keeps the prompt's end (and its BOS) and the completion's start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import jinja2

from prefalign.data.errors import DataError, RowRef
from prefalign.data.examples import PreferencePair, Text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    ref: RowRef
    extras: dict[str, float] = field(default_factory=dict)
    truncated: bool = False
    rejected_prompt_ids: list[int] | None = None  # a joint pair's second prompt (DOVE)

    @property
    def rows(self) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]]]:
        """(prompt, completion) token rows of the chosen and the rejected side."""
        rejected_prompt = self.prompt_ids if self.rejected_prompt_ids is None else self.rejected_prompt_ids
        return (self.prompt_ids, self.chosen_ids), (rejected_prompt, self.rejected_ids)


# No tokenizer in use puts more characters than this in one token on real text; cutting a row at
# CHARS_PER_TOKEN * max_length characters therefore keeps every token truncation would keep.
CHARS_PER_TOKEN = 32


@dataclass(frozen=True)
class TokenizedCompletion:
    prompt_ids: list[int]
    completion_ids: list[int]


class CompletionTokenizer:
    """Tokenizes (prompt, completion) with an exact boundary; counts boundary fallbacks and truncations."""

    def __init__(self, tokenizer: object, max_length: int, max_prompt_length: int | None = None,
                 too_long: str = "truncate") -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.too_long = too_long
        self.boundary_fallbacks = 0
        self.truncated = 0

    # -- rendering -------------------------------------------------------------------------------------

    def _render(self, prompt: Text, completion: Text) -> tuple[str, str, bool]:
        """(prompt text, full text, whether special tokens are already in the text)."""
        if isinstance(prompt, str):
            if not isinstance(completion, str):
                raise TypeError("a plain-text prompt needs a plain-text completion")
            return prompt, prompt + completion, False
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("conversational data needs a tokenizer with a chat template")
        render = self.tokenizer.apply_chat_template
        prompt_text = render(prompt, tokenize=False, add_generation_prompt=True)
        full_text = render(prompt + list(completion), tokenize=False)
        return prompt_text, full_text, True

    def prompt_ids(self, prompt: Text) -> list[int]:
        """The prompt alone as training sees it (for messages: the chat template with the generation prompt),
        for sampling a completion from it."""
        prompt_text, _, templated = self._render(prompt, "" if isinstance(prompt, str) else [])
        return self._ids(prompt_text, templated)

    def _ids(self, text: str, templated: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=not templated)["input_ids"])

    def encode(self, prompt: Text, completion: Text, where: RowRef | str = "") -> TokenizedCompletion:
        """Token ids of the prompt and of the completion (EOS appended), split exactly where the prompt ends."""
        if self.too_long == "truncate" and isinstance(prompt, str) and isinstance(completion, str):
            cut = self._cut_characters(prompt, completion)
            if cut != (prompt, completion):
                short = self._encode(*cut, where)
                if self._enough(short, prompt, completion):
                    return short
        return self._encode(prompt, completion, where)

    def _cut_characters(self, prompt: str, completion: str) -> tuple[str, str]:
        """A huge row is cut by characters before tokenizing: the prompt keeps its last, the completion its
        first CHARS_PER_TOKEN * max_length characters, far more than max_length tokens need."""
        keep = CHARS_PER_TOKEN * self.max_length
        return prompt[max(0, len(prompt) - keep):], completion[:keep]

    def _enough(self, short: TokenizedCompletion, prompt: str, completion: str) -> bool:
        """Whether the cut lost nothing that truncation would keep: each cut side still has max_length tokens
        (an uncut side is whole)."""
        keep = CHARS_PER_TOKEN * self.max_length
        prompt_ok = len(prompt) <= keep or len(short.prompt_ids) >= self.max_length
        completion_ok = len(completion) <= keep or len(short.completion_ids) >= self.max_length
        return prompt_ok and completion_ok

    def _encode(self, prompt: Text, completion: Text, where: RowRef | str = "") -> TokenizedCompletion:
        try:
            prompt_text, full_text, templated = self._render(prompt, completion)
        except jinja2.TemplateError as exc:  # e.g. a template that wants user/assistant turns alternating
            raise DataError(where, "prompt", f"the chat template rejects this conversation: {exc}",
                            "chat_template") from None
        prompt_ids = self._ids(prompt_text, templated)
        full_ids = self._ids(full_text, templated)
        if full_ids[: len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
            completion_ids = full_ids[len(prompt_ids):]
        else:
            self.boundary_fallbacks += 1
            if self.boundary_fallbacks == 1:
                log.warning("%s: the prompt's tokens are not a prefix of prompt+completion (BOS or chat-template "
                            "drift); tokenizing the completion on its own from here on where this happens", where)
            rest = full_text[len(prompt_text):] if full_text.startswith(prompt_text) else _plain(completion)
            completion_ids = list(self.tokenizer(rest, add_special_tokens=False)["input_ids"])
        eos = self.tokenizer.eos_token_id
        if eos is not None and (not completion_ids or completion_ids[-1] != eos):
            completion_ids.append(eos)
        return TokenizedCompletion(prompt_ids, completion_ids)

    # -- truncation ------------------------------------------------------------------------------------

    def fit(self, prompt_ids: list[int], completions: list[list[int]], where: RowRef | str) -> tuple[list[int], list[list[int]], bool]:
        """Truncate to max_length: the prompt keeps its end (and a leading BOS), completions their start."""
        budget_prompt = self.max_prompt_length
        longest = max(len(c) for c in completions)
        over = len(prompt_ids) + longest > self.max_length
        if over and self.too_long == "reject":
            raise DataError(where, None, f"{len(prompt_ids) + longest} tokens exceed max_length={self.max_length}", "too_long")
        if over and budget_prompt is None:
            budget_prompt = max(self.max_length - longest, self.max_length // 2)
        cut = budget_prompt is not None and len(prompt_ids) > budget_prompt
        if cut:
            bos = self.tokenizer.bos_token_id
            keep_bos = bos is not None and prompt_ids[0] == bos
            tail = prompt_ids[len(prompt_ids) - budget_prompt + keep_bos:]
            prompt_ids = ([bos] if keep_bos else []) + tail
        room = self.max_length - len(prompt_ids)
        fitted = [c[:room] for c in completions]
        truncated = cut or any(len(f) < len(c) for f, c in zip(fitted, completions))
        self.truncated += truncated
        return prompt_ids, fitted, truncated

    def pair(self, pair: PreferencePair) -> TokenizedPair:
        if pair.rejected_prompt is not None:
            return self._joint_pair(pair)
        chosen = self.encode(pair.prompt, pair.chosen, pair.ref)
        rejected = self.encode(pair.prompt, pair.rejected, pair.ref)
        completions = [chosen.completion_ids, rejected.completion_ids]
        if pair.next_step:  # a step continues the answer: no EOS after it
            completions = [c[:-1] if c and c[-1] == self.tokenizer.eos_token_id else c for c in completions]
        prompt_ids, (c, r), truncated = self.fit(chosen.prompt_ids, completions, pair.ref)
        if c == r:  # texts that differ only where the tokenizer does not look (whitespace), or past max_length
            why = f"is the same as chosen once truncated to max_length={self.max_length}" if truncated else \
                "tokenizes to the same ids as chosen (the texts differ only in whitespace)"
            raise DataError(pair.ref, "rejected", why, "identical_pair")
        return TokenizedPair(prompt_ids, c, r, pair.ref, pair.extras, truncated)

    def _joint_pair(self, pair: PreferencePair) -> TokenizedPair:
        sides = []
        for prompt, completion in ((pair.prompt, pair.chosen), (pair.rejected_prompt, pair.rejected)):
            encoded = self.encode(prompt, completion, pair.ref)
            prompt_ids, (completion_ids,), truncated = self.fit(encoded.prompt_ids, [encoded.completion_ids], pair.ref)
            sides.append((prompt_ids, completion_ids, truncated))
        (pc, c, tc), (pr, r, tr) = sides
        return TokenizedPair(pc, c, r, pair.ref, pair.extras, tc or tr, rejected_prompt_ids=pr)


def _plain(text: Text) -> str:
    return text if isinstance(text, str) else "".join(m["content"] for m in text)


@dataclass(frozen=True)
class TokenizedList:
    """A prompt with k >= 2 completions ordered best first (a pair is a list of two)."""

    prompt_ids: list[int]
    completions: list[list[int]]
    ref: RowRef


@dataclass(frozen=True)
class TokenizedUnpaired:
    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    ref: RowRef


def tokenize_list(tok: CompletionTokenizer, prompt: Text, responses: list[Text], ref: RowRef) -> TokenizedList:
    encoded = [tok.encode(prompt, r, ref) for r in responses]
    prompt_ids, completions, _ = tok.fit(encoded[0].prompt_ids, [e.completion_ids for e in encoded], ref)
    return TokenizedList(prompt_ids, completions, ref)


def tokenize_unpaired(tok: CompletionTokenizer, prompt: Text, completion: Text, label: bool, ref: RowRef) -> TokenizedUnpaired:
    encoded = tok.encode(prompt, completion, ref)
    prompt_ids, (completion_ids,), _ = tok.fit(encoded.prompt_ids, [encoded.completion_ids], ref)
    return TokenizedUnpaired(prompt_ids, completion_ids, label, ref)
