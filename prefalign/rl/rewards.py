"""The RL reward: a weighted sum of terms (`rl.rewards`), each scored per sample and logged on its own.

A term is a scorer of prefalign/online/scorers.py (gold, noisy_gold, verifier, rm:FOLDER), or one of the
shaping terms below, which read the sample's text or its token count."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prefalign.config.schema import RLConfig
from prefalign.decoding.sampling import Sample
from prefalign.decoding.self_consistency import first_number
from prefalign.online.scorers import SCORERS, build_scorer


def format_reward(sample: Sample, cfg: RLConfig) -> float:
    """1 when the response states a number (the arithmetic answer's format), else 0."""
    return float(first_number(sample.text) is not None)


def length_reward(sample: Sample, cfg: RLConfig) -> float:
    """Completion tokens / max_new_tokens, in [0, 1]."""
    return len(sample.completion_ids) / cfg.max_new_tokens


def overlong_reward(sample: Sample, cfg: RLConfig) -> float:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13): 0 up to L_max - L_cache tokens, then
    ((L_max - L_cache) - |y|) / L_cache down to -1 at L_max."""
    free = cfg.max_new_tokens - cfg.overlong_buffer
    return min(0.0, (free - len(sample.completion_ids)) / cfg.overlong_buffer)


SHAPING: dict[str, Callable[[Sample, RLConfig], float]] = {
    "format": format_reward, "length": length_reward, "overlong": overlong_reward}


@dataclass
class RewardBreakdown:
    total: list[float]
    terms: dict[str, list[float]]  # each term's unweighted scores, by term name


class RewardTerms:
    """`rl.rewards` (or, with `terms` and `where`, another list of (name, weight) such as the cost)."""

    def __init__(self, cfg: RLConfig, terms: list[tuple[str, float]] | None = None, where: str = "rl.rewards") -> None:
        known = sorted(SHAPING) + sorted(SCORERS)
        self.cfg = cfg
        self.terms = []
        pairs = terms if terms is not None else [(t.name, t.weight) for t in cfg.rewards]
        for i, (name, weight) in enumerate(pairs):
            if name in SHAPING:
                self.terms.append((name, weight, None))
            elif name.partition(":")[0] in SCORERS:
                self.terms.append((name, weight, build_scorer(name, cfg.noise)))
            else:
                label = f"{where}.{i}.name" if terms is None else f"{where}.name"
                raise ValueError(f"{label}: unknown reward term {name!r}; known: {', '.join(known)}")

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.terms]

    def score(self, prompts: list[str], samples: list[Sample], seed: int) -> RewardBreakdown:
        """One reward per sample; `prompts[i]` is the prompt of `samples[i]`."""
        total = [0.0] * len(samples)
        terms = {}
        for name, weight, scorer in self.terms:
            if scorer is None:
                values = [SHAPING[name](s, self.cfg) for s in samples]
            else:
                values = scorer.score(prompts, [s.text for s in samples], seed)
            terms[name] = values
            total = [t + weight * v for t, v in zip(total, values)]
        return RewardBreakdown(total, terms)
