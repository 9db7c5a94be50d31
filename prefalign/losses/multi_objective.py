"""Multi-objective DPO: one preference dataset plus other objectives' reward columns."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss


class MODPOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    preference_weight: float = Field(0.5, gt=0, le=1, description="w_k: the weight of the objective the pairs express")
    others: dict[str, float] = Field(
        default_factory=dict,
        description="weights of the other objectives; objective NAME reads the columns NAME_chosen and NAME_rejected")


def _modpo_columns(params: MODPOParams) -> list[str]:
    return [f"{name}_{side}" for name in params.others for side in ("chosen", "rejected")]


@register_loss("modpo", MODPOParams, columns=_modpo_columns)
def modpo(logps: PairLogps, beta: float, preference_weight: float, others: dict[str, float]) -> tuple[torch.Tensor, dict]:
    """MODPO, Zhou et al. 2023, "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct Preference
    Optimization". The pairs express objective k; the other objectives' rewards r_j are columns. With
    weights w (w_k = preference_weight), margin m = sum_j w_j (r_j(x, y_w) - r_j(x, y_l)):
        loss = -log s((b h - m) / w_k)
    The policy is then the optimum of the w-weighted reward mix under a KL penalty b; w_k = 1 with no others
    is DPO. Train over several weight vectors to trace the front (`prefalign modpo-sweep`)."""
    margin = torch.zeros_like(logps.chosen)
    for name, weight in others.items():
        margin = margin + weight * (logps.column(f"{name}_chosen") - logps.column(f"{name}_rejected"))
    loss = -F.logsigmoid((beta * logps.margin() - margin) / preference_weight)
    return loss, {"modpo/other_margin": margin.detach()}
