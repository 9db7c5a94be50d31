"""Losses that anchor each response's implicit reward on its own, not only the margin between the two."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss


class BetaParams(LossParams):
    beta: float = Field(0.1, gt=0)


@register_loss("apo_zero", BetaParams)
def apo_zero(logps: PairLogps, beta: float) -> torch.Tensor:
    """APO-zero, D'Oosterlinck et al. 2024, "Anchored Preference Optimization and Contrastive Revisions":
    push the winner's likelihood up and the loser's down, each against the reference:
    (1 - s(b d_w)) + s(b d_l). For data whose chosen answers are better than the model's own."""
    d_w, d_l = logps.log_ratios()
    return (1 - torch.sigmoid(beta * d_w)) + torch.sigmoid(beta * d_l)


@register_loss("apo_down", BetaParams)
def apo_down(logps: PairLogps, beta: float) -> torch.Tensor:
    """APO-down (same paper): push both likelihoods down, the loser's more: s(b d_w) + (1 - s(b (d_w - d_l))).
    For data whose chosen answers are worse than the model's own."""
    d_w, d_l = logps.log_ratios()
    return torch.sigmoid(beta * d_w) + (1 - torch.sigmoid(beta * (d_w - d_l)))


@register_loss("nca", BetaParams)
def nca(logps: PairLogps, beta: float) -> torch.Tensor:
    """NCA, Chen et al. 2024, "Noise Contrastive Alignment of Language Models with Explicit Rewards"
    (pairwise form): -log s(r_w) - 1/2 log s(-r_w) - 1/2 log s(-r_l) with r = b d. Optimises absolute
    likelihoods, so the chosen likelihood does not fall as it can under DPO."""
    d_w, d_l = logps.log_ratios()
    r_w, r_l = beta * d_w, beta * d_l
    return -F.logsigmoid(r_w) - 0.5 * F.logsigmoid(-r_w) - 0.5 * F.logsigmoid(-r_l)


def _bco_state() -> dict[str, float]:
    return {"mean": 0.0, "count": 0.0}


@register_loss("bco", BetaParams, state=_bco_state, couples_batch=True)
def bco(logps: PairLogps, beta: float, state: dict, update: bool) -> tuple[torch.Tensor, dict]:
    """BCO, Jung et al. 2024, "Binary Classifier Optimization for Large Language Model Alignment" (paired
    form): each response is classified on its own against a reward baseline delta, the running mean of all
    implicit rewards seen in training: -log s(r_w - delta) - log s(-(r_l - delta)), r = b d."""
    d_w, d_l = logps.log_ratios()
    r_w, r_l = beta * d_w, beta * d_l
    if update:
        rewards = torch.cat([r_w, r_l]).detach()
        total = state["count"] + rewards.numel()
        state["mean"] += (rewards.mean().item() - state["mean"]) * rewards.numel() / total
        state["count"] = total
    delta = state["mean"]
    loss = -F.logsigmoid(r_w - delta) - F.logsigmoid(-(r_l - delta))
    return loss, {"bco/baseline": torch.tensor(delta)}
