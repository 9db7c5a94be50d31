"""From k scored samples of one prompt to preference pairs (`online.pairs`), registered by name.

A rule is `rule(scores, texts, context) -> PairChoice`; `context` carries the rules' settings and a random
generator seeded per prompt (RSO draws). Ties carry no preference: they are skipped and counted, never
resolved in favour of the first sample. Empty samples (EOS first) and identical texts make no pair either."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class PairChoice:
    pairs: list[tuple[int, int]]  # (chosen sample, rejected sample)
    ties: int  # comparisons skipped because the scores were equal
    why: str


@dataclass
class PairContext:
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    rso_beta: float = 0.5  # RSO: the temperature of the reward tilt exp(r / beta)
    rso_accepted: int = 2  # RSO: samples accepted before pairing


def _usable(texts: list[str]) -> list[int]:
    return [i for i, t in enumerate(texts) if t.strip()]


def best_vs_worst(scores: list[float], texts: list[str], context: PairContext | None = None) -> PairChoice:
    """Guo et al. 2024 (online DPO) and Xu et al. 2023 (iterative DPO): the best sample against the worst."""
    usable = _usable(texts)
    if len(usable) < 2:
        return PairChoice([], 0, "fewer than 2 non-empty samples")
    best = max(usable, key=lambda i: scores[i])
    worst = min(usable, key=lambda i: scores[i])
    if scores[best] == scores[worst]:
        return PairChoice([], 1, "tie: every sample scored the same")
    if texts[best] == texts[worst]:
        return PairChoice([], 0, "best and worst samples are the same text")
    return PairChoice([(best, worst)], 0, f"best vs worst, margin {scores[best] - scores[worst]:.3f}")


def all_pairs(scores: list[float], texts: list[str], context: PairContext | None = None) -> PairChoice:
    """Every ordered pair of distinct, differently scored samples (the higher score chosen)."""
    usable = _usable(texts)
    pairs, ties = [], 0
    for a in usable:
        for b in usable:
            if a < b and texts[a] != texts[b]:
                if scores[a] == scores[b]:
                    ties += 1
                else:
                    pairs.append((a, b) if scores[a] > scores[b] else (b, a))
    return PairChoice(pairs, ties, f"{len(pairs)} pairs of {len(usable)} samples")


def rso_acceptance(scores: list[float], beta: float) -> list[float]:
    """The probability that one proposal of sample i is accepted: exp((r_i - r_max) / beta)."""
    top = max(scores)
    return [math.exp((r - top) / beta) for r in scores]


def rso_sample(scores: list[float], beta: float, m: int, rng: random.Random) -> list[int]:
    """RSO's statistical rejection sampling (Liu et al. 2024, Algorithm 1): propose a remaining sample
    uniformly, accept it with probability exp((r - r_max) / beta), until m are accepted (or none remain).
    The accepted samples are draws from pi(y|x) exp(r(y|x) / beta), the policy the optimal DPO solution
    tilts towards, rather than from pi itself. r_max is over all k samples, as in the paper."""
    accept = rso_acceptance(scores, beta)
    remaining, accepted = list(range(len(scores))), []
    while remaining and len(accepted) < m:
        i = rng.choice(remaining)
        if rng.random() < accept[i]:
            accepted.append(i)
            remaining.remove(i)
    return accepted


def rso(scores: list[float], texts: list[str], context: PairContext | None = None) -> PairChoice:
    """RSO (Liu et al. 2024, "Statistical Rejection Sampling Improves Preference Optimization"): the
    accepted samples of `rso_sample`, paired two by two in the order accepted (the first round of the paper's
    tournament), the higher reward chosen."""
    context = context or PairContext()
    usable = _usable(texts)
    if len(usable) < 2:
        return PairChoice([], 0, "fewer than 2 non-empty samples")
    picked = rso_sample([scores[i] for i in usable], context.rso_beta, context.rso_accepted, context.rng)
    accepted = [usable[i] for i in picked]
    pairs, ties = [], 0
    for a, b in zip(accepted[0::2], accepted[1::2]):
        if scores[a] == scores[b]:
            ties += 1
        elif texts[a] != texts[b]:
            pairs.append((a, b) if scores[a] > scores[b] else (b, a))
    return PairChoice(pairs, ties, f"rso: accepted {accepted} of {len(usable)}")


PAIR_RULES: dict[str, Callable[[list[float], list[str], PairContext | None], PairChoice]] = {
    "best_vs_worst": best_vs_worst,
    "all_pairs": all_pairs,
    "rso": rso,
}
