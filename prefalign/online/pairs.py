"""From k scored samples of one prompt to preference pairs (`online.pairs`), registered by name.

Ties carry no preference: they are skipped and counted, never resolved in favour of the first sample. Empty
samples (EOS first) and identical texts make no pair either."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class PairChoice:
    pairs: list[tuple[int, int]]  # (chosen sample, rejected sample)
    ties: int  # comparisons skipped because the scores were equal
    why: str


def _usable(texts: list[str]) -> list[int]:
    return [i for i, t in enumerate(texts) if t.strip()]


def best_vs_worst(scores: list[float], texts: list[str]) -> PairChoice:
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


def all_pairs(scores: list[float], texts: list[str]) -> PairChoice:
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


PAIR_RULES: dict[str, Callable[[list[float], list[str]], PairChoice]] = {
    "best_vs_worst": best_vs_worst,
    "all_pairs": all_pairs,
}
