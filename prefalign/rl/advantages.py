"""Advantage estimators, registered by name (`rl.advantage`).

Each takes a rollout's rewards and returns per-token advantages [N, T] (zero off the completion). N = P x G
sequences, group-major: rows g*G .. g*G + G - 1 are the G samples of prompt g. `rewards` [P, G] are the
outcome rewards; `token_rewards` [N, T] the per-token terms folded into the reward (minus the KL penalty when
rl.kl.placement is reward, else zero). Outcome estimators see a sequence's total reward R = r +
sum_t token_rewards_t and give all its tokens one advantage; token-level ones (REINFORCE++, GAE) place r on
the last completion token and sum the returns backwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class AdvantageInputs:
    rewards: torch.Tensor  # [P, G]
    token_rewards: torch.Tensor  # [N, T]
    mask: torch.Tensor  # [N, T]
    values: torch.Tensor | None = None  # [N, T], the critic at sampling time (GAE)
    gamma: float = 1.0
    lam: float = 0.95
    eps: float = 1e-6

    @property
    def group_size(self) -> int:
        return self.rewards.shape[1]

    def sequence_rewards(self) -> torch.Tensor:
        """R [P, G]: the outcome reward plus the per-token terms summed over the completion."""
        return self.rewards + (self.token_rewards * self.mask).sum(-1).view_as(self.rewards)

    def per_token(self, sequence: torch.Tensor) -> torch.Tensor:
        """[P, G] -> [N, T]: each sequence's value on all its completion tokens."""
        return sequence.reshape(-1, 1) * self.mask

    def token_rewards_with_outcome(self, outcome: torch.Tensor) -> torch.Tensor:
        """[N, T]: the per-token terms, plus `outcome` [P, G] on each sequence's last completion token."""
        last = last_token(self.mask)
        placed = torch.zeros_like(self.mask).scatter(1, last[:, None], outcome.reshape(-1, 1))
        return self.token_rewards * self.mask + placed * (self.mask.sum(-1, keepdim=True) > 0)


@dataclass
class Advantages:
    advantages: torch.Tensor  # [N, T]
    returns: torch.Tensor | None = None  # [N, T], the critic's targets (GAE only)


def last_token(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last completion token (0 for an empty row)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * (mask > 0)).amax(-1)


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{s >= t} gamma^(s - t) r_s along each completion."""
    rewards = rewards * mask  # past a completion's end everything is zero, so sums never cross it
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    """(v - mean) / std over all completion tokens of the rollout batch."""
    n = mask.sum()
    mean = (values * mask).sum() / n
    var = (((values - mean) * mask) ** 2).sum() / (n - 1).clamp(min=1)
    return (values - mean) / (var.sqrt() + eps) * mask


ADVANTAGES: dict[str, Callable[[AdvantageInputs], Advantages]] = {}


def register_advantage(name: str) -> Callable:
    def wrap(fn: Callable[[AdvantageInputs], Advantages]) -> Callable:
        ADVANTAGES[name] = fn
        return fn

    return wrap


@register_advantage("grpo")
def grpo(x: AdvantageInputs) -> Advantages:
    """GRPO (Shao et al. 2024): A_i = (R_i - mean_g R) / (std_g R + eps), std unbiased over the group."""
    r = x.sequence_rewards()
    a = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + x.eps)
    return Advantages(x.per_token(a))


@register_advantage("dr_grpo")
def dr_grpo(x: AdvantageInputs) -> Advantages:
    """Dr. GRPO (Liu et al. 2025): the group mean subtracted, no std division (it favours easy and hard
    prompts alike and biases the update): A_i = R_i - mean_g R."""
    r = x.sequence_rewards()
    return Advantages(x.per_token(r - r.mean(1, keepdim=True)))


@register_advantage("rloo")
def rloo(x: AdvantageInputs) -> Advantages:
    """RLOO (Kool et al. 2019; Ahmadian et al. 2024): leave-one-out baseline, A_i = R_i - mean_{j != i} R_j."""
    r = x.sequence_rewards()
    g = x.group_size
    if g < 2:
        raise ValueError("rl.advantage rloo needs rl.group_size >= 2")
    return Advantages(x.per_token(r - (r.sum(1, keepdim=True) - r) / (g - 1)))


@register_advantage("reinforce_pp")
def reinforce_pp(x: AdvantageInputs) -> Advantages:
    """REINFORCE++ (Hu 2025): token rewards (the KL terms, the outcome on the last token), returns to go,
    then normalised over the whole rollout batch instead of per prompt."""
    g = returns_to_go(x.token_rewards_with_outcome(x.rewards), x.mask, x.gamma)
    return Advantages(whiten(g, x.mask, x.eps))


@register_advantage("reinforce_pp_baseline")
def reinforce_pp_baseline(x: AdvantageInputs) -> Advantages:
    """REINFORCE++-baseline (Hu 2025): the group mean reward subtracted first, then as REINFORCE++."""
    outcome = x.rewards - x.rewards.mean(1, keepdim=True)
    g = returns_to_go(x.token_rewards_with_outcome(outcome), x.mask, x.gamma)
    return Advantages(whiten(g, x.mask, x.eps))


@register_advantage("gae")
def gae(x: AdvantageInputs) -> Advantages:
    """GAE (Schulman et al. 2016), PPO's estimator: delta_t = r_t + gamma V_{t+1} - V_t (V = 0 after the last
    token), A_t = delta_t + gamma lambda A_{t+1}; returns R_t = A_t + V_t; advantages whitened over the batch."""
    if x.values is None:
        raise ValueError("rl.advantage gae needs a critic: add a `value` loss term")
    r = x.token_rewards_with_outcome(x.rewards)
    v = x.values * x.mask  # zero past the end: V = 0 after the last token, and deltas there vanish
    following = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)
    delta = (r + x.gamma * following - v) * x.mask
    adv = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        running = delta[:, t] + x.gamma * x.lam * running
        adv[:, t] = running
    return Advantages(whiten(adv, x.mask, x.eps), (adv + v) * x.mask)
