"""Policy-gradient losses (kind `policy`): per-token losses [N, T] from the current, old and reference
log-probs and the advantages (prefalign/rl/advantages.py). How the tokens are averaged (token mean, sequence
mean, a constant normaliser) is the RL objective's `rl.aggregation`, not the loss's; KL to the reference is
`rl.kl`. Each loss returns (per-token loss, metrics); values off the completion are ignored.

Notation: r_t = pi_theta(y_t|.) / pi_old(y_t|.), A_t the advantage, eps_low / eps_high the clip range."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from prefalign.losses.inputs import PolicyLogps
from prefalign.losses.registry import LossParams, register_loss


class ClipParams(LossParams):
    eps_low: float = Field(0.2, ge=0, description="lower clip: r >= 1 - eps_low")
    eps_high: float = Field(0.2, ge=0, description="upper clip: r <= 1 + eps_high (DAPO's clip-higher: 0.28)")


def _clip_fraction(ratio: torch.Tensor, low: float, high: float, x: PolicyLogps) -> torch.Tensor:
    outside = ((ratio < 1 - low) | (ratio > 1 + high)).float()
    return x.sequence_mean(outside.detach())


@register_loss("ppo_clip", ClipParams, needs=("token_logps",), kind="policy")
def ppo_clip(x: PolicyLogps, eps_low: float, eps_high: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate (Schulman et al. 2017), the policy loss of GRPO (Shao et al. 2024) and, with
    eps_high > eps_low, DAPO's clip-higher (Yu et al. 2025):
    l_t = -min(r_t A_t, clip(r_t, 1 - eps_low, 1 + eps_high) A_t)."""
    ratio = x.ratio()
    loss = -torch.minimum(ratio * x.advantages, ratio.clamp(1 - eps_low, 1 + eps_high) * x.advantages)
    return loss, {"rl/clip_fraction": _clip_fraction(ratio, eps_low, eps_high, x)}


class GSPOParams(LossParams):
    eps_low: float = Field(3e-4, ge=0, description="the paper's sequence-level clip range is tiny: 3e-4 / 4e-4")
    eps_high: float = Field(4e-4, ge=0)


@register_loss("gspo", GSPOParams, needs=("token_logps",), kind="policy")
def gspo(x: PolicyLogps, eps_low: float, eps_high: float) -> tuple[torch.Tensor, dict]:
    """GSPO (Zheng et al. 2025): one importance ratio per sequence, the geometric mean of its token ratios,
    s_i = exp(mean_t(log pi_theta - log pi_old)), clipped as PPO's; l_i = -min(s_i A_i, clip(s_i) A_i) with
    A_i the sequence's advantage. Every token of a sequence carries l_i, so the sequence-mean aggregation
    gives the paper's loss."""
    s = torch.exp(x.sequence_mean(x.logps - x.old))
    a = x.sequence_mean(x.advantages)
    loss = -torch.minimum(s * a, s.clamp(1 - eps_low, 1 + eps_high) * a)
    clipped = ((s < 1 - eps_low) | (s > 1 + eps_high)).float().detach()
    return loss[:, None].expand_as(x.logps), {"rl/clip_fraction": clipped}


class CISPOParams(LossParams):
    eps_low: float = Field(1.0, ge=0, description="1.0: no lower bound (MiniMax-M1 clips only from above)")
    eps_high: float = Field(0.28, ge=0)


@register_loss("cispo", CISPOParams, needs=("token_logps",), kind="policy")
def cispo(x: PolicyLogps, eps_low: float, eps_high: float) -> tuple[torch.Tensor, dict]:
    """CISPO (MiniMax-M1, 2025): clip the importance weight, not the update, and stop its gradient, so every
    token keeps a gradient: l_t = -sg(clip(r_t, 1 - eps_low, 1 + eps_high)) A_t log pi_theta(y_t|.)."""
    ratio = x.ratio()
    weight = ratio.clamp(1 - eps_low, 1 + eps_high).detach()
    return -weight * x.advantages * x.logps, {"rl/clip_fraction": _clip_fraction(ratio, eps_low, eps_high, x)}


@register_loss("policy_gradient", needs=("token_logps",), kind="policy")
def policy_gradient(x: PolicyLogps) -> torch.Tensor:
    """REINFORCE with an importance weight (Williams 1992; the loss of RLOO, Ahmadian et al. 2024, and
    REINFORCE++, Hu 2025): l_t = -r_t A_t, whose gradient on the sampling policy is -A_t grad log pi."""
    return -x.ratio() * x.advantages


class ValueParams(LossParams):
    clip: float | None = Field(0.2, gt=0, description="PPO's value clipping around the sampling-time estimate")
    hidden: int = Field(64, gt=0, description="width of the value head's hidden layer")


def _value_head(params: ValueParams, policy: torch.nn.Module) -> torch.nn.Module:
    """A small MLP on the policy's final hidden states (detached: the critic does not move the policy)."""
    size = policy.config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(size, params.hidden), torch.nn.Tanh(), torch.nn.Linear(params.hidden, 1))
    torch.nn.init.zeros_(head[2].weight)
    torch.nn.init.zeros_(head[2].bias)
    return head


@register_loss("value", ValueParams, needs=("values",), kind="policy", module=_value_head)
def value_loss(x: PolicyLogps, clip: float | None, hidden: int, module: torch.nn.Module) -> tuple[torch.Tensor, dict]:
    """PPO's critic loss (Schulman et al. 2017; clipped as in OpenAI baselines):
    l_t = 1/2 max((V_t - R_t)^2, (clip(V_t, V_old - c, V_old + c) - R_t)^2), R_t the GAE returns."""
    if x.values is None or x.returns is None or x.old_values is None:
        raise ValueError("the value loss needs values and returns: use rl.advantage: gae")
    err = (x.values - x.returns) ** 2
    if clip is not None:
        clipped = x.old_values + (x.values - x.old_values).clamp(-clip, clip)
        err = torch.maximum(err, (clipped - x.returns) ** 2)
    return 0.5 * err, {"rl/value_error": x.sequence_mean(err.detach())}


class SRFTParams(LossParams):
    sft_coef: float = Field(0.5, ge=0, description="w_SFT = sft_coef * exp(-H)")
    rl_coef: float = Field(0.1, ge=0, description="w_RL = rl_coef * exp(H), on the positive samples")
    eps: float = Field(0.2, ge=0, description="the clip range of the demonstrations' RL term")
    positive: float = Field(0.0, description="a sample whose outcome reward is above this is a positive y+")


@register_loss("srft", SRFTParams, needs=("token_logps", "demonstrations"), kind="policy")
def srft(x: PolicyLogps, sft_coef: float, rl_coef: float, eps: float, positive: float) -> tuple[torch.Tensor, dict]:
    """SRFT (Fu et al. 2025, "A Single-Stage Method with Supervised and Reinforcement Fine-Tuning"): SFT and RL
    in one loss over groups holding the policy's samples and a demonstration (rl.demonstrations),

      L = w_SFT E_demo[-log pi(y)]                                         SFT on the demonstration
          - E_demo[min(r_t A, clip(r_t, 1 - eps, 1 + eps) A)], r_t = pi(y_t)  off-policy RL on it (pi_beta = 1)
          + w_RL E_{y+}[-log pi(y+)] + E_{y-}[log pi(y-)]                    the policy's own samples

    with w_SFT = sft_coef sg(exp(-H)) and w_RL = rl_coef sg(exp(H)), H the policy's entropy (here its mean
    token entropy on the rollout's own samples, taken when they were drawn), A the demonstration's advantage
    within its group (rl.advantage over the G samples and the demonstration) and y+/y- the samples whose
    outcome reward is above/not above `positive`. The SFT weight falls as the policy grows uncertain; the
    positive samples' weight rises, which lowers the entropy again. Coefficients 0.5 and 0.1 as the paper's.
    The signs of the entropy in the two weights are read from the paper's description (a secondary note
    writes exp(-H) for both)."""
    if x.demo is None or x.rewards is None:
        raise ValueError("srft needs rl.demonstrations")
    demo = x.demo[:, None]
    w_sft = sft_coef * math.exp(-x.entropy)
    w_rl = rl_coef * math.exp(x.entropy)
    prob = torch.exp(x.logps * x.mask)
    demo_loss = -w_sft * x.logps - torch.minimum(prob * x.advantages, prob.clamp(1 - eps, 1 + eps) * x.advantages)
    pos = (x.rewards > positive).float()[:, None]
    own_loss = -w_rl * pos * x.logps + (1 - pos) * x.logps
    n = x.logps.shape[0]
    return demo * demo_loss + (1 - demo) * own_loss, {
        "rl/srft_w_sft": torch.full((n,), w_sft), "rl/srft_w_rl": torch.full((n,), w_rl)}


class GRAOParams(LossParams):
    beta: float = Field(0.5, ge=0, description="the imitation term's weight on the demonstration")
    lam: float = Field(0.6, ge=0, description="the alignment regulariser's weight (the paper's lambda)")


@register_loss("grao", GRAOParams, needs=("token_logps", "demonstrations"), kind="policy")
def grao(x: PolicyLogps, beta: float, lam: float) -> tuple[torch.Tensor, dict]:
    """GRAO (Wang et al. 2025, "Learning to Align, Aligning to Learn", eq. 3): per group of G samples o_i and
    the prompt's demonstration y (rl.demonstrations), with J(s) = (1/|s|) sum_t log pi(s_t) and advantages
    normalised within the group of G + 1 (rl.advantage: grpo),

      J_GRAO = (1/G) sum_i [ A_i J(o_i)                  exploration: the policy's own samples
                           + beta A_y J(y)               imitation: the demonstration
                           + lam A_i (J(o_i) - J(y)) ]   alignment regulariser

    so a sample weighs (1 + lam) A_i and the demonstration beta A_y - lam mean_i(A_i). The loss is -J, written
    per token so that `rl.aggregation: sequence_mean` (an average over the B (G + 1) rows) gives exactly the
    mean of -J_GRAO over the groups. beta 0.5 and lam 0.6 as the paper's. The demonstration is imitated
    hardest when the samples fail (A_y large); once they succeed as often, its weight falls to zero or below."""
    if x.demo is None:
        raise ValueError("grao needs rl.demonstrations")
    adv = x.sequence_mean(x.advantages)
    groups = int(x.demo.sum())
    size = adv.shape[0] // max(groups, 1)
    if groups == 0 or groups * size != adv.shape[0] or not bool((x.demo.view(groups, size)[:, -1] == 1).all()):
        raise ValueError("grao needs whole groups, each ending with its demonstration")
    a = adv.view(groups, size)
    own, demo = a[:, :-1], a[:, -1]
    g = size - 1
    coef = torch.cat([size / g * (1 + lam) * own, (size * (beta * demo - lam * own.mean(-1)))[:, None]], dim=1)
    return -coef.reshape(-1, 1).detach() * x.logps, {
        "rl/grao_demo_advantage": demo.detach().mean().expand(adv.shape[0])}
