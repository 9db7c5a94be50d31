"""DPO and its noise-aware variants. Notation: h = (logp_w - ref_w) - (logp_l - ref_l), s = sigmoid."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss


class DPOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)


def smoothed_logistic(z: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """-(1-e) log s(z) - e log s(-z): the logistic loss on a preference logit z when labels are flipped
    with probability e (Mitchell 2023); e = 0 is the plain -log s(z)."""
    return -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)


@register_loss("dpo", DPOParams)
def dpo(logps: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """DPO, Rafailov et al. 2023, "Direct Preference Optimization": -log s(b h).

    With label_smoothing e > 0 this is conservative DPO (cDPO, Mitchell 2023), which assumes labels are
    flipped with probability e: -(1-e) log s(b h) - e log s(-b h)."""
    return smoothed_logistic(beta * logps.margin(), label_smoothing)


class RobustDPOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    label_smoothing: float = Field(0.1, ge=0, lt=0.5)


@register_loss("robust_dpo", RobustDPOParams)
def robust_dpo(logps: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """Robust DPO, Chowdhury et al. 2024, "Provably Robust DPO": an unbiased loss under label-flip rate e,
    [-(1-e) log s(b h) + e log s(-b h)] / (1 - 2e)."""
    e = label_smoothing
    h = logps.margin()
    return (-(1 - e) * F.logsigmoid(beta * h) + e * F.logsigmoid(-beta * h)) / (1 - 2 * e)


class EXOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    epsilon: float = Field(1e-3, gt=0, lt=0.5)


@register_loss("exo", EXOParams)
def exo(logps: PairLogps, beta: float, epsilon: float) -> torch.Tensor:
    """EXO, Ji et al. 2024, "Towards Efficient Exact Optimization of Language Model Alignment" (pairwise form,
    eq. 16): the reverse KL from the model's preference distribution p = s(b h) to the smoothed labels
    (1-e, e): p (log p - log(1-e)) + (1-p) (log(1-p) - log e). Mode-seeking where DPO is mean-seeking."""
    z = beta * logps.margin()
    return torch.sigmoid(z) * (F.logsigmoid(z) - math.log(1 - epsilon)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - math.log(epsilon))


@register_loss("dove", DPOParams)
def dove(logps: PairLogps, beta: float, label_smoothing: float) -> torch.Tensor:
    """DOVE, Bansal et al. 2024, "Comparing Bad Apples to Good Oranges: Aligning Large Language Models via
    Joint Preference Optimization". For joint pairs (x_w, y_w) > (x_l, y_l), whose prompts may differ:
        -log s(b [log pi(y_w|x_w)/pi_ref(y_w|x_w) - log pi(y_l|x_l)/pi_ref(y_l|x_l)])
    The prompt likelihoods cancel under the policy and the reference, so this is DPO's formula on rows with
    their own prompts (data.format: joint); same-prompt pairs mixed in are plain DPO pairs."""
    return dpo(logps, beta, label_smoothing)
