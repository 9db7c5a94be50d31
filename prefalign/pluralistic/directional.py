"""Directional Preference Alignment (Wang et al. 2024, "Arithmetic Control of LLMs for Diverse User
Preferences: Directional Preference Alignment with Multi-Objective Rewards").

A response's rewards are a vector r(x, y) in R^2 (a multi-objective reward model, each objective
standardised over the training samples), a user's preference a unit vector v = (cos a, sin a) with a in
[0, 90] degrees, and the user's reward their projection

    R_v(x, y) = v . z(x, y),        z_k = (r_k - mean_k) / sd_k

Training is preference-conditioned rejection-sampling fine-tuning (RSF), repeated for rounds: per prompt
draw a direction, sample n responses from the current model with the direction in its prompt, and fine-tune
on the one that maximises R_v. At inference the user sets the direction (arithmetic control).

The direction sits where a system message would, as its angle in 10-degree steps (a small integer any
tokenizer can spell): "<|system|> k prompt" asks for a = 10 k degrees."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

PREFIX = "<|system|>"
STEP_DEGREES = 10
STEPS = 90 // STEP_DEGREES + 1  # k = 0 .. 9


def direction(k: int) -> np.ndarray:
    """The unit preference vector asked for by step k (angle 10 k degrees from the first objective)."""
    if not 0 <= k < STEPS:
        raise ValueError(f"a direction step is 0..{STEPS - 1}, got {k}")
    a = math.radians(k * STEP_DEGREES)
    return np.array([math.cos(a), math.sin(a)])


def step_for_weights(weights: tuple[float, float]) -> int:
    """The step whose direction is nearest the direction of non-negative weights (w_1, w_2)."""
    if min(weights) < 0 or max(weights) <= 0:
        raise ValueError(f"weights must be non-negative and not all zero, got {weights}")
    degrees = math.degrees(math.atan2(weights[1], weights[0]))
    return int(degrees / STEP_DEGREES + 0.5)


def condition(prompt: str, k: int) -> str:
    return f"{PREFIX} {k} {prompt}"


@dataclass(frozen=True)
class ObjectiveScale:
    """Per objective, the mean and standard deviation that standardise its rewards."""

    mean: tuple[float, ...]
    sd: tuple[float, ...]

    @classmethod
    def fit(cls, rewards: np.ndarray) -> ObjectiveScale:
        """From rewards [responses, objectives]."""
        if rewards.ndim != 2 or len(rewards) < 2:
            raise ValueError("ObjectiveScale.fit needs at least two responses, each with a reward per objective")
        sd = rewards.std(0)
        return cls(tuple(rewards.mean(0)), tuple(np.where(sd > 0, sd, 1.0)))

    def project(self, rewards: np.ndarray, v: np.ndarray) -> np.ndarray:
        """R_v for rewards [..., objectives]."""
        return ((rewards - np.array(self.mean)) / np.array(self.sd)) @ v


def best_for_direction(rewards: np.ndarray, scale: ObjectiveScale, k: int) -> int:
    """The index of the response (rows of rewards [n, objectives]) that maximises R_v; ties go to the first."""
    return int(np.argmax(scale.project(rewards, direction(k))))


def rsf_examples(prompts: list[str], responses: list[list[str]], rewards: np.ndarray, scale: ObjectiveScale,
                 steps: list[int]) -> list[tuple[str, str]]:
    """One RSF round's SFT examples: per prompt, its conditioned prompt and the best of its samples for the
    direction it was sampled with; rewards [prompts, samples, objectives]."""
    return [(condition(prompt, k), samples[best_for_direction(r, scale, k)])
            for prompt, samples, r, k in zip(prompts, responses, rewards, steps, strict=True)]


def draw_steps(n: int, seed: int) -> list[int]:
    """A direction step per prompt, uniform over 0..9."""
    rng = random.Random(seed)
    return [rng.randrange(STEPS) for _ in range(n)]
