"""Constrained RLHF (Safe RLHF, Dai et al. 2023; Moskovitz et al. 2023): maximise the reward subject to
E[cost] <= threshold, by the Lagrangian  max_theta min_{lambda >= 0}  E[r] - lambda (E[c] - threshold).

The policy learns from r - lambda c (divided by 1 + lambda when `normalise`, as Safe RLHF does, so the
advantage scale does not grow with lambda); after every rollout lambda takes a projected gradient step on the
rollout's mean cost: lambda <- max(0, lambda + lr (mean c - threshold)). It rises while the constraint is
violated and falls back to 0 once the cost stays below the threshold."""

from __future__ import annotations


def lagrangian_reward(reward: float, cost: float, multiplier: float, normalise: bool) -> float:
    shaped = reward - multiplier * cost
    return shaped / (1 + multiplier) if normalise else shaped


def update_multiplier(multiplier: float, mean_cost: float, threshold: float, lr: float) -> float:
    return max(0.0, multiplier + lr * (mean_cost - threshold))
