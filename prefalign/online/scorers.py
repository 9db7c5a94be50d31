"""Pointwise scorers for online methods: score(prompts, responses, seed) -> one number per response.

Registered by name (`online.scorer`). Each is batched and, where it is noisy, seeded per call, so that a
resumed run labels its rollouts exactly as the interrupted one did and no RNG state needs saving.

  gold        the toy world's gold reward
  noisy_gold  gold + N(0, online.noise^2): an unreliable annotator
  brevity     the toy's second objective, -0.1 per word (shorter is better)
  verifier    toy arithmetic: 1 if the first number stated is the answer, else 0 (arithmetic prompts only)
  self_consistency  the share of the prompt's samples that state the same answer (ScPO's vote); never
              reads the true answer, so it labels prompts that have none
  rm:FOLDER   a saved scalar reward model (prefalign rm train)
  maxmin:FOLDER  MaxMin-RLHF: the worst-off group's standardised reward (groups fitted by prefalign rm groups)"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Protocol

from prefalign.decoding.self_consistency import first_number
from prefalign.toy.gold_reward import brevity_reward, gold_reward
from prefalign.toy.world import parse_prompt


class Scorer(Protocol):
    def score(self, prompts: list[str], responses: list[str], seed: int) -> list[float]: ...


class GoldScorer:
    def score(self, prompts: list[str], responses: list[str], seed: int) -> list[float]:
        return [gold_reward(p, r) for p, r in zip(prompts, responses)]


class BrevityScorer:
    def score(self, prompts: list[str], responses: list[str], seed: int) -> list[float]:
        return [brevity_reward(p, r) for p, r in zip(prompts, responses)]


class NoisyGoldScorer:
    def __init__(self, sigma: float) -> None:
        self.sigma = sigma

    def score(self, prompts: list[str], responses: list[str], seed: int) -> list[float]:
        rng = random.Random(seed)
        return [gold_reward(p, r) + rng.gauss(0.0, self.sigma) for p, r in zip(prompts, responses)]


class ArithmeticVerifier:
    def score(self, prompts: list[str], responses: list[str], seed: int) -> list[float]:
        out = []
        for p, r in zip(prompts, responses):
            info = parse_prompt(p)
            if info.kind != "arithmetic":
                raise ValueError(f"the verifier checks arithmetic answers; {p!r} has no answer to check "
                                 "(online.prompts: toy-arithmetic)")
            out.append(float(first_number(r) == str(info.answer)))
        return out


class SelfConsistencyVote:
    """ScPO (Prasad et al. 2024, "Self-Consistency Preference Optimization"): each response scores the
    fraction of the same prompt's responses (in this call) whose answer, the first number stated, equals
    its own; a response that states no answer scores 0. Only the responses are read."""

    def score(self, prompts: list[str], responses: list[str], seed: int) -> list[float]:
        answers = [first_number(r) for r in responses]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(prompts):
            groups[p].append(i)
        out = [0.0] * len(responses)
        for members in groups.values():
            votes = Counter(answers[i] for i in members if answers[i] is not None)
            for i in members:
                out[i] = votes[answers[i]] / len(members) if answers[i] is not None else 0.0
        return out


class RewardModelScorer:
    def __init__(self, folder: str) -> None:
        from prefalign.rewards.scoring import RewardScorer

        self.inner = RewardScorer(folder)

    def score(self, prompts: list[str], responses: list[str], seed: int) -> list[float]:
        return self.inner.score(prompts, responses)


SCORERS: dict[str, Callable[..., Scorer]] = {
    "gold": lambda arg, noise: GoldScorer(),
    "noisy_gold": lambda arg, noise: NoisyGoldScorer(noise),
    "brevity": lambda arg, noise: BrevityScorer(),
    "verifier": lambda arg, noise: ArithmeticVerifier(),
    "self_consistency": lambda arg, noise: SelfConsistencyVote(),
    "rm": lambda arg, noise: RewardModelScorer(arg),
    "maxmin": lambda arg, noise: _maxmin(arg),
}


def _maxmin(folder: str) -> Scorer:
    from prefalign.pluralistic.maxmin import MaxMinScorer

    return MaxMinScorer(folder)


def build_scorer(spec: str, noise: float = 0.5) -> Scorer:
    """`name` or `name:argument` (rm:FOLDER)."""
    name, _, arg = spec.partition(":")
    if name not in SCORERS:
        raise ValueError(f"unknown online.scorer {spec!r}; known: {', '.join(sorted(SCORERS))} (rm and maxmin take "
                         ":FOLDER)")
    if name in ("rm", "maxmin") and not arg:
        example = {"rm": "rm:runs/reward/reward_model", "maxmin": "maxmin:runs/groups"}[name]
        raise ValueError(f"online.scorer {name} needs a folder: {example}")
    return SCORERS[name](arg, noise)
