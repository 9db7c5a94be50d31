"""Contrast Instructions (Shen et al. 2023, "The Trickle-down Impact of Reward (In-)consistency on RLHF"): does
a reward model notice that a small change to the prompt changes which response is right?

A contrast is two lexically similar prompts x_a, x_b with their own good responses y_a, y_b. A consistent reward
model ranks each prompt with its own response above the other combinations:

    response consistency      r(x_a, y_a) > r(x_a, y_b)  and  r(x_b, y_b) > r(x_b, y_a)
    instruction consistency   r(x_a, y_a) > r(x_b, y_a)  and  r(x_b, y_b) > r(x_a, y_b)

The paper builds its benchmark from datasets whose prompts come in such near-duplicates; here the contrasts come
from any preference data: each prompt's nearest other prompt by TF-IDF cosine (word uni- and bigrams, one-letter
words and digits included, so "what is 1 plus 7 ?" and "what is 5 plus 5 ?" differ), kept at `min_similarity` or
more, with each prompt's first chosen response as its good response. A chosen response is only preferred to
another, not a reference answer, so where a trusted scorer exists, its own consistency on the same contrasts is
the ceiling to read the figures against (docs/reward_consistency.md does so with the toy's gold reward).
Bradley-Terry training only fixes reward differences under one prompt, so nothing in it asks for instruction
consistency; it is reported because the paper's RLHF argument needs rewards comparable across prompts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics.pairwise import cosine_similarity

from prefalign.data.examples import PreferencePair
from prefalign.rewards.inputs import plain_text

Score = Callable[[list[str], list[str]], list[float]]


@dataclass(frozen=True)
class Contrast:
    prompt_a: str
    response_a: str
    prompt_b: str
    response_b: str
    similarity: float


def contrast_pairs(pairs: list[PreferencePair], min_similarity: float) -> list[Contrast]:
    """Every prompt with its nearest other prompt, when their similarity reaches min_similarity and their
    responses differ; each unordered pair once, in the order the prompts first appear."""
    good: dict[str, str] = {}
    for p in pairs:
        good.setdefault(plain_text(p.prompt), plain_text(p.chosen))
    prompts = list(good)
    if len(prompts) < 2:
        return []
    sim = cosine_similarity(TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b").fit_transform(prompts))
    np.fill_diagonal(sim, -1.0)
    seen, out = set(), []
    for i, j in enumerate(sim.argmax(axis=1)):
        key = (min(i, j), max(i, j))
        if sim[i, j] >= min_similarity and good[prompts[i]] != good[prompts[j]] and key not in seen:
            seen.add(key)
            a, b = prompts[key[0]], prompts[key[1]]
            out.append(Contrast(a, good[a], b, good[b], float(sim[i, j])))
    return out


def contrast_consistency(score: Score, contrasts: list[Contrast]) -> dict:
    """The share of contrasts that are response-consistent, instruction-consistent, and both."""
    if not contrasts:
        return {"contrasts": 0}
    a = [c.prompt_a for c in contrasts]
    b = [c.prompt_b for c in contrasts]
    ya = [c.response_a for c in contrasts]
    yb = [c.response_b for c in contrasts]
    r_aa, r_ab, r_ba, r_bb = (np.array(score(x, y)) for x, y in [(a, ya), (a, yb), (b, ya), (b, yb)])
    response = (r_aa > r_ab) & (r_bb > r_ba)
    instruction = (r_aa > r_ba) & (r_bb > r_ab)
    return {"contrasts": len(contrasts), "response_consistency": float(response.mean()),
            "instruction_consistency": float(instruction.mean()), "both": float((response & instruction).mean()),
            "mean_similarity": float(np.mean([c.similarity for c in contrasts]))}
