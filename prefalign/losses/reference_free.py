"""Reference-free preference losses: no reference model, usually on length-normalised log-probs
avg = log pi(y|x) / |y|."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.dpo import smoothed_logistic
from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss
from prefalign.losses.sft import NLL_NORMALIZE_HELP, NLLNormalize, couples_when_token_mean, nll

ALPHA_HELP = "AlphaPO's reward shape: r = (1 - exp(-alpha s)) / alpha of the log-prob s; 0 is s itself"


def alpha_reward(s: torch.Tensor, alpha: float) -> torch.Tensor:
    """AlphaPO, Gupta et al. 2025, "AlphaPO: Reward Shape Matters for LLM Alignment": the reward of a
    log-probability s = log p is r_a = (1 - p^(-a)) / a = -expm1(-a s) / a, which tends to s as a -> 0.
    a > 0 flattens the reward of already-likely responses (less likelihood displacement), a < 0 sharpens it.
    On summed log-probs exp(-a s) can overflow for long completions; the paper uses it on SimPO's averages."""
    return s if alpha == 0 else -torch.expm1(-alpha * s) / alpha


class SimPOParams(LossParams):
    beta: float = Field(2.0, gt=0)
    gamma: float = Field(1.0, ge=0)
    length_normalize: bool = True
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed label-flip rate, as in cDPO")
    alpha: float = Field(0.0, description=ALPHA_HELP)


@register_loss("simpo", SimPOParams, needs=())
def simpo(logps: PairLogps, beta: float, gamma: float, length_normalize: bool, label_smoothing: float,
          alpha: float) -> tuple[torch.Tensor, dict]:
    """SimPO, Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward":
    -log s(b (avg_w - avg_l) - g). With g = 0 and no length normalisation it is reference-free DPO.
    label_smoothing e: -(1-e) log s(z) - e log s(-z) on that logit z, as TRL's. alpha != 0 is AlphaPO
    (Gupta et al. 2025): avg replaced by its shaped reward (1 - exp(-alpha avg)) / alpha."""
    win, lose = logps.averages() if length_normalize else (logps.chosen, logps.rejected)
    margin = alpha_reward(win, alpha) - alpha_reward(lose, alpha)
    return smoothed_logistic(beta * margin - gamma, label_smoothing), {"simpo/margin": margin.detach()}


class AlphaPOParams(SimPOParams):
    beta: float = Field(2.5, gt=0)
    gamma: float = Field(0.1, ge=0)
    alpha: float = Field(0.25, description=ALPHA_HELP)


@register_loss("alphapo", AlphaPOParams, needs=())
def alphapo(logps: PairLogps, beta: float, gamma: float, length_normalize: bool, label_smoothing: float,
            alpha: float) -> tuple[torch.Tensor, dict]:
    """AlphaPO, Gupta et al. 2025: SimPO on the shaped reward r_a = (1 - exp(-a avg)) / a,
    -log s(b (r_a(y_w) - r_a(y_l)) - g), with the paper's Mistral-Instruct settings (Table 3: a 0.25, b 2.5,
    g 0.1) as defaults; the same as `simpo` with `alpha` set."""
    return simpo(logps, beta, gamma, length_normalize, label_smoothing, alpha)


class CPOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    alpha: float = Field(1.0, ge=0, description="weight of the NLL term on the chosen answer")
    loss_type: Literal["sigmoid", "hinge", "ipo"] = Field(
        "sigmoid", description="the preference term on m = r_w - r_l: -log s(b m), max(0, 1 - b m), or "
        "(m - 1/(2b))^2 on mean token log-probs")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="assumed label-flip rate (sigmoid only)")
    reward_alpha: float = Field(0.0, description=ALPHA_HELP)
    nll_normalize: NLLNormalize = Field("sequence", description=NLL_NORMALIZE_HELP)


@register_loss("cpo", CPOParams, needs=(), couples_batch=couples_when_token_mean)
def cpo(logps: PairLogps, beta: float, alpha: float, loss_type: str, label_smoothing: float, reward_alpha: float,
        nll_normalize: str) -> tuple[torch.Tensor, dict]:
    """CPO, Xu et al. 2024, "Contrastive Preference Optimization": a DPO-style term without reference plus
    NLL on the winner, -log s(b (log pi(y_w|x) - log pi(y_l|x))) + a NLL(y_w). The reference-free forms of
    TRL's CPO family replace the preference term by SLiC's hinge max(0, 1 - b m) or IPO's (m - 1/(2b))^2,
    the latter on mean token log-probs as TRL takes it; reward_alpha shapes r as AlphaPO does."""
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"cpo: label_smoothing applies to loss_type 'sigmoid' only, not {loss_type!r}")
    win, lose = logps.averages() if loss_type == "ipo" else (logps.chosen, logps.rejected)
    m = alpha_reward(win, reward_alpha) - alpha_reward(lose, reward_alpha)
    if loss_type == "sigmoid":
        preference = smoothed_logistic(beta * m, label_smoothing)
    elif loss_type == "hinge":
        preference = torch.relu(1 - beta * m)
    else:
        preference = (m - 1 / (2 * beta)) ** 2
    chosen_nll = nll(logps.chosen, logps.chosen_tokens, nll_normalize)
    return preference + alpha * chosen_nll, {"cpo/nll": chosen_nll.detach(), "cpo/margin": m.detach()}


class ORPOParams(LossParams):
    lam: float = Field(0.1, ge=0, description="weight of the odds-ratio term (the paper's lambda)")
    nll_normalize: NLLNormalize = Field("sequence", description=NLL_NORMALIZE_HELP)


def log_odds(avg_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) of the mean token probability p = exp(avg), computed stably."""
    avg = avg_logp.clamp(max=-1e-6)
    return avg - torch.log(-torch.expm1(avg))


@register_loss("orpo", ORPOParams, needs=(), couples_batch=couples_when_token_mean)
def orpo(logps: PairLogps, lam: float, nll_normalize: str) -> tuple[torch.Tensor, dict]:
    """ORPO, Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model":
    NLL(y_w)/|y_w| + lambda * -log s(log odds(y_w) - log odds(y_l)), odds from the mean token probability.
    The authors' code takes the NLL as a token mean over the batch (nll_normalize: tokens)."""
    avg_w, avg_l = logps.averages()
    ratio = log_odds(avg_w) - log_odds(avg_l)
    return nll(logps.chosen, logps.chosen_tokens, nll_normalize) - lam * F.logsigmoid(ratio), {
        "orpo/log_odds_ratio": ratio.detach()}


class RePOParams(LossParams):
    gamma: float = Field(0.5, ge=0)


@register_loss("repo", RePOParams, needs=())
def repo(logps: PairLogps, gamma: float) -> tuple[torch.Tensor, dict]:
    """RePO, Wu et al. 2025, "RePO: ReLU-based Preference Optimization": SimPO's margin with a ReLU
    max-margin loss and no beta (SimPO's beta -> infinity limit): max(0, g - (avg_w - avg_l)). Pairs already
    separated by g contribute nothing."""
    avg_w, avg_l = logps.averages()
    loss = torch.relu(gamma - (avg_w - avg_l))
    return loss, {"repo/active": (loss > 0).float()}


class ASFTParams(LossParams):
    beta: float = Field(1.0, gt=0)
    lam: float = Field(1.0, ge=0)
    nll_normalize: NLLNormalize = Field("sequence", description=NLL_NORMALIZE_HELP)


@register_loss("asft", ASFTParams, needs=(), couples_batch=couples_when_token_mean)
def asft(logps: PairLogps, beta: float, lam: float, nll_normalize: str) -> torch.Tensor:
    """ASFT, Wang et al. 2024, "ASFT: Aligned Supervised Fine-Tuning through Absolute Likelihood", with the
    beta of Gorbatovski et al. 2025 ("The Differences Between Direct Alignment Algorithms are a Blur"):
    NLL(y_w)/|y_w| - lambda [log s(b r_w) + log s(-b r_l)], r = log odds of the mean token probability.
    Each response's likelihood is pushed on its own (up for y_w, down for y_l), not their ratio."""
    avg_w, avg_l = logps.averages()
    absolute = F.logsigmoid(beta * log_odds(avg_w)) + F.logsigmoid(-beta * log_odds(avg_l))
    return nll(logps.chosen, logps.chosen_tokens, nll_normalize) - lam * absolute
