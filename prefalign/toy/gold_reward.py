"""The toy world's gold reward r*(prompt, response): what "aligned" means here, computed from the text.

review:      1.5 * (pos - neg) / max(pos + neg, 1)      sentiment: positive words are good
             + 0.5 if the asked item is named, - 0.5 if another item is, - 0.25 if none is
             - 0.5 per sentence repeated verbatim
             - 0.1 per word beyond 20                  (rambling)
list:        (2 * min(right, n) - wrong - duplicates) / n - 0.3 * |entries - n|
             where right counts distinct members of the asked category and n is the asked count
arithmetic:  1.5 if the stated number is the answer, else -0.3 * min(|error|, 5); + 0.2 for the
             "the answer is" frame; - 0.5 per repeated sentence
Every response also loses 1.0 if it is empty. The reward is a plain function: deterministic and cheap.

A second objective, for multi-objective methods: brevity(response) = -0.1 * words. It partly agrees with the
gold reward (repeats and rambling are long) and partly conflicts (a list needs its entries, a review its
topic), so weighting the two traces a front.
"""

from __future__ import annotations

from prefalign.toy.world import CATEGORIES, ITEMS, NEGATIVE, POSITIVE, parse_prompt


def _sentences(response: str) -> list[str]:
    parts = [s.strip() for s in response.replace("?", ".").split(".")]
    return [s for s in parts if s]


def _repeats(sentences: list[str]) -> int:
    return len(sentences) - len(set(sentences))


def gold_reward(prompt: str, response: str) -> float:
    info = parse_prompt(prompt)
    words = response.split()
    if not words:
        return -1.0
    sentences = _sentences(response)
    if info.kind == "review":
        pos = sum(w in POSITIVE for w in words)
        neg = sum(w in NEGATIVE for w in words)
        named = {w for w in words if w in ITEMS}
        topic = 0.5 if info.item in named else (-0.5 if named else -0.25)
        return 1.5 * (pos - neg) / max(pos + neg, 1) + topic - 0.5 * _repeats(sentences) - 0.1 * max(0, len(words) - 20)
    if info.kind == "list":
        members = set(CATEGORIES[info.category])
        entries = [w for w in words if w not in (",", ".")]
        right = len(set(entries) & members)
        wrong = sum(e not in members for e in entries)
        dups = len(entries) - len(set(entries))
        n = info.count
        return (2 * min(right, n) - wrong - dups) / n - 0.3 * abs(len(entries) - n)
    numbers = [int(w) for w in words if w.isdigit()]
    stated = numbers[0] if numbers else None
    score = 1.5 if stated == info.answer else -0.3 * (5 if stated is None else min(abs(stated - info.answer), 5))
    frame = 0.2 if response.strip().startswith("the answer is") else 0.0
    return score + frame - 0.5 * _repeats(sentences)


def brevity_reward(prompt: str, response: str) -> float:
    """The toy's second objective: shorter is better, -0.1 per word."""
    return -0.1 * len(response.split())
