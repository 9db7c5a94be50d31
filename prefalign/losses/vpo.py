"""VPO, Cen et al. 2024, "Value-Incentivized Preference Optimization: A Unified Approach to Online and Offline
RLHF"."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from prefalign.losses.dpo import smoothed_logistic
from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss


class VPOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    alpha: float = Field(0.1, ge=0, description="weight of the value term")
    sign: Literal["pessimistic", "optimistic"] = Field(
        "pessimistic", description="pessimistic for offline data, optimistic for the online loops' own samples")
    calibration: Literal["chosen", "both"] = Field(
        "chosen", description="the responses standing for pi_cal: the chosen ones, or both of each pair")


@register_loss("vpo", VPOParams)
def vpo(logps: PairLogps, beta: float, alpha: float, sign: str, calibration: str) -> tuple[torch.Tensor, dict]:
    """The reward's maximum-likelihood loss regularised by its value, signed for pessimism (offline) or
    optimism (online). With the implicit reward r = b log pi/pi_ref the optimal value J*(r) is 0, so the
    calibrated value J*(r) - E_{pi_cal}[r] is -b E_{y ~ pi_cal}[d(y)], d = log pi(y|x)/pi_ref(y|x), and
        pessimistic:  loss = -log s(b h) - a b d_cal     (raise the calibration responses' implicit reward)
        optimistic:   loss = -log s(b h) + a b d_cal     (lower it: the policy explores away from pi_cal)
    d_cal is d_w (calibration: chosen, the offline data's preferred answers) or (d_w + d_l)/2 (both). The
    pessimistic form with the chosen answers is DPO plus an SFT-like pull measured against the reference,
    the adversarial-regulariser reading of RPO."""
    d_w, d_l = logps.log_ratios()
    d_cal = d_w if calibration == "chosen" else (d_w + d_l) / 2
    signed = -1.0 if sign == "pessimistic" else 1.0
    return smoothed_logistic(beta * (d_w - d_l), 0.0) + signed * alpha * beta * d_cal, {
        "vpo/calibration_reward": (beta * d_cal).detach()}
