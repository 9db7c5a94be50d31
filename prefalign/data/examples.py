"""The typed, validated examples that the readers' raw records become."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from prefalign.data.errors import RowRef

Message = dict[str, str]
# A text is a plain string, or a list of chat messages ({"role": ..., "content": ...}).
Text = Union[str, list[Message]]


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred (`chosen`) and a dispreferred (`rejected`) completion.

    Conversational pairs hold message lists: `prompt` the conversation so far, `chosen`/`rejected` the
    assistant turn(s). `extras` keeps the record's other numeric columns (margins, weights, ...).
    A joint pair (DOVE) compares two instruction-response pairs: the rejected response answers
    `rejected_prompt`, another prompt. `tags` keeps short string and integer columns (a user or group, a
    subset name) as strings. A step pair (Step-DPO) holds the accepted steps so far in `prompt` and two
    candidate next steps, which do not end the answer."""

    prompt: Text
    chosen: Text
    rejected: Text
    ref: RowRef
    extras: dict[str, float] = field(default_factory=dict)
    rejected_prompt: Text | None = None
    tags: dict[str, str] = field(default_factory=dict)
    next_step: bool = False  # Step-DPO: chosen/rejected are the next reasoning step, not whole answers (no EOS)

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


@dataclass(frozen=True)
class RatedPrompt:
    """A prompt with several scored completions (UltraFeedback style); higher score is better."""

    prompt: Text
    completions: list[Text]
    scores: list[float]
    ref: RowRef


@dataclass(frozen=True)
class RankedList:
    """A prompt with k >= 2 responses ordered best first."""

    prompt: Text
    responses: list[Text]
    ref: RowRef
    scores: list[float] | None = None


@dataclass(frozen=True)
class TripleExample:
    """A prompt with a gold response and a preferred and a less preferred one (TPO)."""

    prompt: Text
    gold: Text
    chosen: Text
    rejected: Text
    ref: RowRef


@dataclass(frozen=True)
class UnpairedExample:
    """A prompt with one completion labelled desirable (True) or undesirable (False), as KTO uses."""

    prompt: Text
    completion: Text
    label: bool
    ref: RowRef


@dataclass(frozen=True)
class Demonstration:
    """A prompt and a completion to imitate (SFT), with a score where the data has one (conditional training
    reads it)."""

    prompt: Text
    completion: Text
    ref: RowRef
    score: float | None = None


Example = Union[PreferencePair, RatedPrompt, RankedList, TripleExample, UnpairedExample, Demonstration]
