"""Rewards-in-Context (Yang et al. 2024, "Rewards-in-Context: Multi-objective Alignment of Foundation Models
with Dynamic Preference Adjustment"): supervised fine-tuning on prompts that state the rewards their response
earned, then, at inference, a user's preference weights mapped to the rewards to ask for.

  train:  x' = "<|system|> l_1 ... l_K " + x,   loss -log pi(y | x'),   l_k the level of r_k(x, y)
  infer:  l_k(w) = L - 1                  if w_k >= 1/K      RiC's preference-to-reward mapping: every
          l_k(w) = K w_k (L - 1)          otherwise          favoured objective is asked at its maximum

A level quantises an objective's reward into L bins between its 5th and 95th percentiles in the training
data (rewards outside are clipped), so the prompt carries small integers any tokenizer can spell. The levels
sit where a system message would: the conditioning is part of the prompt and never trained on. RiC's
second stage (adding the policy's own Pareto-optimal samples to the data and fine-tuning again) is not
implemented."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PREFIX = "<|system|>"


def _nearest(x: float) -> int:
    return int(x + 0.5)  # halves round up, so the same share always lands on the same level


@dataclass(frozen=True)
class RewardLevels:
    """Per objective, the reward range that maps onto levels 0 .. n - 1."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    n: int = 10

    @classmethod
    def fit(cls, rewards: list[list[float]], n: int = 10) -> RewardLevels:
        """From the training data's rewards, one row per response with one column per objective."""
        table = np.asarray(rewards, dtype=float)
        if table.ndim != 2 or len(table) < 2:
            raise ValueError("RewardLevels.fit needs at least two responses, each with a reward per objective")
        return cls(tuple(np.percentile(table, 5, axis=0)), tuple(np.percentile(table, 95, axis=0)), n)

    def levels(self, rewards: list[float]) -> list[int]:
        out = []
        for r, lo, hi in zip(rewards, self.low, self.high, strict=True):
            share = 0.0 if hi <= lo else (min(max(r, lo), hi) - lo) / (hi - lo)
            out.append(_nearest(share * (self.n - 1)))
        return out


def condition(prompt: str, levels: list[int]) -> str:
    """The prompt as RiC trains and queries it: the reward levels first, then the prompt."""
    return f"{PREFIX} {' '.join(str(level) for level in levels)} {prompt}"


def preference_levels(weights: list[float], n: int = 10) -> list[int]:
    """RiC's mapping from preference weights (non-negative, summing to 1) to the levels to ask for."""
    if any(w < 0 for w in weights) or abs(sum(weights) - 1) > 1e-6:
        raise ValueError(f"preference weights must be non-negative and sum to 1, got {weights}")
    k = len(weights)
    return [n - 1 if w >= 1 / k else _nearest(k * w * (n - 1)) for w in weights]


def conditioned_examples(rows: list[tuple[str, str, list[float]]], scale: RewardLevels) -> list[tuple[str, str]]:
    """(prompt, response, rewards) rows as RiC's SFT examples (conditioned prompt, response)."""
    return [(condition(prompt, scale.levels(rewards)), response) for prompt, response, rewards in rows]
