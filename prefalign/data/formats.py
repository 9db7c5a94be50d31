"""Raw records -> typed examples. One parser per format; each checks its fields and raises a located DataError.

Formats (declared, or detected from the first record's keys):
  standard        {"prompt": str, "chosen": str, "rejected": str}                       (TRL standard)
  conversational  {"prompt": [messages], "chosen": [messages], "rejected": [messages]}   (TRL conversational)
  implicit        {"chosen": full conversation, "rejected": full conversation}          (HH-RLHF)
  rated           {"prompt"|"instruction": ..., "completions": [{"response": ..., "score" | "scores": ...}]}
  ranked          {"prompt": ..., "responses": [best, ..., worst]} or with "scores"
  unpaired        {"prompt": ..., "completion": ..., "label": bool}                       (KTO)
  joint           {"chosen_prompt", "chosen", "rejected_prompt", "rejected"}               (DOVE)
  triple          {"prompt", "gold", "chosen", "rejected"}                                 (TPO)
  step            {"prompt", "initial_reason_steps", "chosen", "rejected"}                  (Step-DPO)
  completion      {"prompt": ..., "completion": ...}, optional "score"          (SFT; TRL prompt-completion)
  messages        {"messages": [..., last an assistant turn]}, optional "score"  (SFT; TRL conversational)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from prefalign.data.errors import DataError, RowRef
from prefalign.data.examples import (
    Demonstration,
    Example,
    PreferencePair,
    RankedList,
    RatedPrompt,
    Text,
    TripleExample,
    UnpairedExample,
)
from prefalign.data.implicit_prompt import is_prefix, split_message_conversations, split_string_conversations

FORMATS = ("standard", "conversational", "implicit", "rated", "ranked", "unpaired", "joint", "triple", "step",
           "completion", "messages")
_PROMPT_KEYS = ("prompt", "instruction")
_RESPONSE_KEYS = ("response", "text", "completion", "content")


def detect_format(fields: dict, where: RowRef | str) -> str:
    keys = set(fields)
    if {"chosen_prompt", "rejected_prompt"} <= keys:
        return "joint"
    if {"gold", "chosen", "rejected"} <= keys:
        return "triple"
    if {"initial_reason_steps", "chosen", "rejected"} <= keys:
        return "step"
    if {"chosen", "rejected"} <= keys:
        if "prompt" not in keys:
            return "implicit"
        return "conversational" if isinstance(fields["prompt"], list) else "standard"
    if "completions" in keys:
        return "rated"
    if "responses" in keys:
        return "ranked"
    if {"completion", "label"} <= keys:
        return "unpaired"
    if "completion" in keys:
        return "completion"
    if "messages" in keys:
        return "messages"
    raise DataError(
        where, None,
        f"cannot tell the data format from the keys {sorted(keys)}; expected prompt/chosen/rejected, "
        "chosen/rejected (implicit prompt), completions (rated), responses (ranked), completion/label "
        "(unpaired), prompt/completion or messages (SFT), or declare data.format",
        "unknown_format",
    )


# -- field checks ---------------------------------------------------------------------------------------


ROLES = ("system", "user", "assistant", "tool")


def _field(fields: dict, name: str, ref: RowRef) -> object:
    if name not in fields or fields[name] is None:
        raise DataError(ref, name, "missing", "missing_field")
    return fields[name]


def _text(value: object, ref: RowRef, name: str, *, allow_empty: bool = False) -> Text:
    """A string, or a list of {role, content} messages; non-empty unless `allow_empty`."""
    if isinstance(value, str):
        if not allow_empty and not value.strip():
            raise DataError(ref, name, "is empty", "empty_response")
        return value
    if isinstance(value, list):
        for i, msg in enumerate(value):
            if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or "content" not in msg:
                raise DataError(ref, f"{name}[{i}]", "expected a message {role: str, content: str}", "mistyped_field")
            if not isinstance(msg["content"], str):
                raise DataError(ref, f"{name}[{i}].content", f"expected a string, got {type(msg['content']).__name__}", "mistyped_field")
            if msg["role"] not in ROLES:
                raise DataError(ref, f"{name}[{i}].role", f"unknown role {msg['role']!r}; expected one of "
                                f"{', '.join(ROLES)}", "bad_role")
        if not allow_empty and not any(m["content"].strip() for m in value):
            raise DataError(ref, name, "is empty", "empty_response")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError(ref, name, f"expected a string or a list of messages, got {type(value).__name__}", "mistyped_field")


def _score(value: object, ref: RowRef, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(ref, name, f"expected a number, got {type(value).__name__}", "mistyped_field")
    try:
        score = float(value)
    except ValueError:
        raise DataError(ref, name, f"expected a number, got {value!r}", "mistyped_field") from None
    if not math.isfinite(score):
        raise DataError(ref, name, f"score is not finite ({value!r})", "non_finite_score")
    return score


def _extras(fields: dict, used: set[str]) -> dict[str, float]:
    return {
        k: float(v) for k, v in fields.items()
        if k not in used and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def _tags(fields: dict, used: set[str]) -> dict[str, str]:
    """The record's short string and integer columns (a user, a group, a subset name), as strings."""
    return {k: str(v) for k, v in fields.items()
            if k not in used and ((isinstance(v, str) and len(v) <= 200) or (isinstance(v, int) and not isinstance(v, bool)))}


def _distinct(chosen: Text, rejected: Text, ref: RowRef) -> None:
    if chosen == rejected:
        raise DataError(ref, "rejected", "is identical to chosen", "identical_pair")


def _prompt(fields: dict, ref: RowRef) -> Text:
    for key in _PROMPT_KEYS:
        if key in fields and fields[key] is not None:
            return _text(fields[key], ref, key, allow_empty=True)
    raise DataError(ref, "prompt", "missing", "missing_field")


# -- parsers --------------------------------------------------------------------------------------------


def parse_standard(fields: dict, ref: RowRef) -> PreferencePair:
    prompt = _field(fields, "prompt", ref)
    if not isinstance(prompt, str):
        raise DataError(ref, "prompt", f"expected a string, got {type(prompt).__name__}", "mistyped_field")
    chosen = _text(_field(fields, "chosen", ref), ref, "chosen")
    rejected = _text(_field(fields, "rejected", ref), ref, "rejected")
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, str):
            raise DataError(ref, name, "expected a string like the prompt (or use the conversational format)", "mistyped_field")
    _distinct(chosen, rejected, ref)
    used = {"prompt", "chosen", "rejected"}
    return PreferencePair(prompt, chosen, rejected, ref, _extras(fields, used), tags=_tags(fields, used))


def parse_conversational(fields: dict, ref: RowRef) -> PreferencePair:
    values = {}
    for name in ("prompt", "chosen", "rejected"):
        value = _text(_field(fields, name, ref), ref, name, allow_empty=name == "prompt")
        if not isinstance(value, list):
            raise DataError(ref, name, "expected a list of messages (conversational format)", "mistyped_field")
        values[name] = value
    if not values["prompt"]:
        raise DataError(ref, "prompt", "has no messages", "empty_response")
    _distinct(values["chosen"], values["rejected"], ref)
    used = {"prompt", "chosen", "rejected"}
    return PreferencePair(values["prompt"], values["chosen"], values["rejected"], ref, _extras(fields, used),
                          tags=_tags(fields, used))


def parse_implicit(fields: dict, ref: RowRef) -> PreferencePair:
    chosen = _text(_field(fields, "chosen", ref), ref, "chosen")
    rejected = _text(_field(fields, "rejected", ref), ref, "rejected")
    if type(chosen) is not type(rejected):
        raise DataError(ref, "rejected", "chosen and rejected must both be strings or both message lists", "mistyped_field")
    _distinct(chosen, rejected, ref)
    extras, tags = _extras(fields, {"prompt", "chosen", "rejected"}), _tags(fields, {"prompt", "chosen", "rejected"})
    if fields.get("prompt") is not None:
        # A prompt given alongside full conversations must be a prefix of both.
        prompt = _text(fields["prompt"], ref, "prompt", allow_empty=True)
        for name, full in (("chosen", chosen), ("rejected", rejected)):
            if not is_prefix(prompt, full):
                raise DataError(ref, "prompt", f"is not a prefix of {name}", "prompt_not_prefix")
        return PreferencePair(prompt, chosen[len(prompt):], rejected[len(prompt):], ref, extras, tags=tags)
    if isinstance(chosen, str):
        prompt, c, r = split_string_conversations(chosen, rejected)
    else:
        prompt, c, r = split_message_conversations(chosen, rejected)
    if not prompt:
        raise DataError(ref, "chosen", "chosen and rejected share no prompt (no common prefix)", "prompt_not_prefix")
    for name, value in (("chosen", c), ("rejected", r)):
        _text(value, ref, f"{name} (after the shared prompt)")
    return PreferencePair(prompt, c, r, ref, extras, tags=tags)


def parse_rated(fields: dict, ref: RowRef, score_key: str | None = None) -> RatedPrompt:
    prompt = _prompt(fields, ref)
    completions = _field(fields, "completions", ref)
    if not isinstance(completions, list) or len(completions) < 2:
        raise DataError(ref, "completions", "expected a list of at least 2 rated completions", "mistyped_field")
    texts, scores = [], []
    for i, comp in enumerate(completions):
        name = f"completions[{i}]"
        if not isinstance(comp, dict):
            raise DataError(ref, name, "expected an object with a response and a score", "mistyped_field")
        key = next((k for k in _RESPONSE_KEYS if k in comp), None)
        if key is None:
            raise DataError(ref, f"{name}.response", "missing", "missing_field")
        texts.append(_text(comp[key], ref, f"{name}.{key}"))
        scores.append(_completion_score(comp, ref, name, score_key))
    return RatedPrompt(prompt, texts, scores, ref)


def _completion_score(comp: dict, ref: RowRef, name: str, score_key: str | None) -> float:
    """`score`, `overall_score`, or `scores` (a dict: `score_key` of it, or the mean of all)."""
    if "scores" in comp:
        scores = comp["scores"]
        if not isinstance(scores, dict) or not scores:
            raise DataError(ref, f"{name}.scores", "expected a non-empty object of named scores", "mistyped_field")
        if score_key is not None:
            if score_key not in scores:
                raise DataError(ref, f"{name}.scores.{score_key}", "missing", "missing_field")
            return _score(scores[score_key], ref, f"{name}.scores.{score_key}")
        values = [_score(v, ref, f"{name}.scores.{k}") for k, v in scores.items()]
        return sum(values) / len(values)
    for key in ("score", "overall_score", "rating"):
        if key in comp:
            return _score(comp[key], ref, f"{name}.{key}")
    raise DataError(ref, f"{name}.score", "missing", "missing_field")


def parse_ranked(fields: dict, ref: RowRef) -> RankedList:
    prompt = _prompt(fields, ref)
    responses = _field(fields, "responses", ref)
    if not isinstance(responses, list) or len(responses) < 2:
        raise DataError(ref, "responses", "expected a list of at least 2 responses", "mistyped_field")
    texts = [_text(r, ref, f"responses[{i}]") for i, r in enumerate(responses)]
    scores = None
    if fields.get("scores") is not None:
        raw = fields["scores"]
        if not isinstance(raw, list) or len(raw) != len(texts):
            raise DataError(ref, "scores", f"expected a list of {len(texts)} numbers, one per response", "mistyped_field")
        scores = [_score(s, ref, f"scores[{i}]") for i, s in enumerate(raw)]
        order = sorted(range(len(texts)), key=lambda i: -scores[i])
        texts, scores = [texts[i] for i in order], [scores[i] for i in order]
    return RankedList(prompt, texts, ref, scores)


def parse_unpaired(fields: dict, ref: RowRef) -> UnpairedExample:
    prompt = _prompt(fields, ref)
    completion = _text(_field(fields, "completion", ref), ref, "completion")
    label = _field(fields, "label", ref)
    if isinstance(label, str) and label.strip().lower() in ("true", "false"):  # CSV cells are strings
        label = label.strip().lower() == "true"
    if not isinstance(label, bool):
        raise DataError(ref, "label", f"expected true or false, got {label!r}", "mistyped_field")
    return UnpairedExample(prompt, completion, label, ref)


def _same_kind(values: dict[str, Text], ref: RowRef) -> None:
    """Plain strings throughout, or message lists throughout."""
    first, *rest = values.items()
    for name, value in rest:
        if isinstance(value, list) != isinstance(first[1], list):
            raise DataError(ref, name, f"is {'a message list' if isinstance(value, list) else 'a string'} but "
                            f"{first[0]} is not; use strings throughout or message lists throughout", "mistyped_field")


def parse_joint(fields: dict, ref: RowRef) -> PreferencePair:
    """Two instruction-response pairs, the first preferred (DOVE's joint preferences)."""
    names = ("chosen_prompt", "chosen", "rejected_prompt", "rejected")
    values = {n: _text(_field(fields, n, ref), ref, n, allow_empty=n.endswith("prompt")) for n in names}
    _same_kind(values, ref)
    if values["chosen_prompt"] == values["rejected_prompt"]:
        _distinct(values["chosen"], values["rejected"], ref)
    return PreferencePair(values["chosen_prompt"], values["chosen"], values["rejected"], ref,
                          _extras(fields, set(names)), rejected_prompt=values["rejected_prompt"])


def parse_triple(fields: dict, ref: RowRef) -> TripleExample:
    prompt = _prompt(fields, ref)
    values = {n: _text(_field(fields, n, ref), ref, n) for n in ("gold", "chosen", "rejected")}
    _same_kind({"prompt": prompt, **values}, ref)
    _distinct(values["chosen"], values["rejected"], ref)
    return TripleExample(prompt, values["gold"], values["chosen"], values["rejected"], ref)


def parse_step(fields: dict, ref: RowRef) -> PreferencePair:
    """Step-DPO (Lai et al. 2024, "Step-DPO: Step-wise Preference Optimization for Long-chain Reasoning"):
    the fields of Math-Step-DPO-10K. The accepted steps join the prompt as they are (keep their own
    separators), so the loss sees only the two candidate next steps; those end no answer, so no EOS is added."""
    pair = parse_standard({k: v for k, v in fields.items() if k != "initial_reason_steps"}, ref)
    steps = _field(fields, "initial_reason_steps", ref)
    if not isinstance(steps, str):
        raise DataError(ref, "initial_reason_steps", f"expected a string, got {type(steps).__name__}", "mistyped_field")
    return dataclasses.replace(pair, prompt=pair.prompt + steps, next_step=True)


def _optional_score(fields: dict, ref: RowRef) -> float | None:
    return _score(fields["score"], ref, "score") if fields.get("score") is not None else None


def parse_completion(fields: dict, ref: RowRef) -> Demonstration:
    prompt = _prompt(fields, ref)
    completion = _text(_field(fields, "completion", ref), ref, "completion")
    _same_kind({"prompt": prompt, "completion": completion}, ref)
    return Demonstration(prompt, completion, ref, _optional_score(fields, ref))


def parse_messages(fields: dict, ref: RowRef) -> Demonstration:
    """A conversation whose last turn, the assistant's, is the completion; the turns before are the prompt."""
    messages = _text(_field(fields, "messages", ref), ref, "messages")
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataError(ref, "messages", "expected a list of at least two messages", "mistyped_field")
    if messages[-1]["role"] != "assistant":
        raise DataError(ref, f"messages[{len(messages) - 1}].role", "the last message is the completion to learn "
                        f"and must be the assistant's, got {messages[-1]['role']!r}", "bad_role")
    return Demonstration(messages[:-1], messages[-1:], ref, _optional_score(fields, ref))


PARSERS: dict[str, Callable[..., Example]] = {
    "joint": parse_joint,
    "triple": parse_triple,
    "step": parse_step,
    "completion": parse_completion,
    "messages": parse_messages,
    "standard": parse_standard,
    "conversational": parse_conversational,
    "implicit": parse_implicit,
    "rated": parse_rated,
    "ranked": parse_ranked,
    "unpaired": parse_unpaired,
}
