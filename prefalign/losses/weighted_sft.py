"""SFT whose examples are weighted by how the policy's likelihood compares with another model's: importance-
weighted SFT against the data's behaviour policy, and PoFT against an aligned model. Both read the chosen
(curated) completion only; the comparison model is the configured reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss
from prefalign.losses.sft import NLL_NORMALIZE_HELP, NLLNormalize, couples_when_token_mean, nll


class IwSFTParams(LossParams):
    temperature: float = Field(1.0, gt=0, description="t in w = exp(t (avg - avg_ref))")
    max_weight: float = Field(16.0, gt=0, description="weights are clipped to [0, max_weight]")
    nll_normalize: NLLNormalize = Field("sequence", description=NLL_NORMALIZE_HELP)


@register_loss("iw_sft", IwSFTParams, couples_batch=couples_when_token_mean)
def iw_sft(logps: PairLogps, temperature: float, max_weight: float, nll_normalize: str) -> tuple[torch.Tensor, dict]:
    """iw-SFT, Qin & Springenberg 2025, "Supervised Fine Tuning on Curated Data is Reinforcement Learning
    (and can be improved)": SFT on curated data maximises a lower bound of the RL objective; weighting each
    sequence by pi_theta(y|x) / q(y|x), q the policy that produced the data (here the reference), tightens it:
        w = clip(exp(t (avg_w - avg_ref_w)), 0, w_max)   (no gradient; per-token means, as the authors' code)
        loss = w NLL(y_w)
    Completions the policy already prefers over q weigh more. With the reference updated along training
    (schedule.reference_update) q follows the policy, as the paper's lagged copy does."""
    d = (logps.chosen - logps.ref_chosen) / logps.chosen_tokens
    w = torch.exp(temperature * d.detach()).clamp(0.0, max_weight)
    return w * nll(logps.chosen, logps.chosen_tokens, nll_normalize), {"iw_sft/weight": w}


class PoFTParams(LossParams):
    beta: float = Field(1.0, gt=0)
    length_normalize: bool = Field(True, description="compare mean token log-likelihoods (else summed)")


@register_loss("poft", PoFTParams)
def poft(logps: PairLogps, beta: float, length_normalize: bool) -> tuple[torch.Tensor, dict]:
    """PoFT, Fan et al. 2024, "Preference-Oriented Supervised Fine-Tuning: Favoring Target Model Over Aligned
    Large Language Models": on SFT data, a Bradley-Terry preference for the target model over an aligned
    model (the reference, e.g. reference.name_or_path: an instruct model):
        loss = -log s(b (s_theta(y_w) - s_ref(y_w))),   s = mean token log-likelihood (or summed)
    Its gradient is SFT's scaled by b s(b (s_ref - s_theta)): data the aligned model finds likely (a quality
    signal) weighs more, data it finds unlikely less. The paper averages several aligned models; here one."""
    if length_normalize:
        margin = (logps.chosen - logps.ref_chosen) / logps.chosen_tokens
    else:
        margin = logps.chosen - logps.ref_chosen
    return -F.logsigmoid(beta * margin), {"poft/margin": margin.detach()}
