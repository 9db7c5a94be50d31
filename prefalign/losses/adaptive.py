"""DPO with adaptive strength or per-example weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss


class BetaDPOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    alpha: float = Field(0.5, ge=0, description="how strongly beta follows the batch's reward discrepancy")
    filter_ratio: float = Field(0.2, ge=0, lt=1, description="fraction of each batch dropped by the filter")
    momentum: float = Field(0.9, ge=0, lt=1)


def _beta_dpo_state() -> dict[str, float]:
    return {"gap_mean": 0.0, "gap_std": 0.0}


@register_loss("beta_dpo", BetaDPOParams, state=_beta_dpo_state, couples_batch=True)
def beta_dpo(logps: PairLogps, beta: float, alpha: float, filter_ratio: float, momentum: float,
             state: dict, update: bool) -> tuple[torch.Tensor, dict]:
    """beta-DPO, Wu et al. 2024, "beta-DPO: Direct Preference Optimization with Dynamic beta".
    The gap M_i = h_i is tracked by moving averages M_0, sigma (momentum 0.9). beta-guided filtering keeps
    (1 - rho) of the batch, drawn without replacement with weights exp(-(M_i - M_0)^2 / (2 sigma^2)), so
    outlier pairs are dropped; the batch's beta is b (1 + a (mean kept M_i - M_0)), at least 1e-3; the
    kept pairs take -log s(beta_batch h), the dropped ones 0."""
    h = logps.margin()
    gap = h.detach()
    if update:
        state["gap_mean"] = momentum * state["gap_mean"] + (1 - momentum) * gap.mean().item()
        std = gap.std(unbiased=False).item() if gap.numel() > 1 else 0.0
        state["gap_std"] = momentum * state["gap_std"] + (1 - momentum) * std
    mean, std = state["gap_mean"], max(state["gap_std"], 1e-6)
    weights = torch.exp(-0.5 * ((gap - mean) / std) ** 2) + 1e-12
    n_keep = max(1, int(gap.numel() * (1 - filter_ratio)))
    kept = torch.zeros_like(gap)
    kept[torch.multinomial(weights, n_keep, replacement=False)] = 1.0
    beta_batch = (beta * (1 + alpha * ((gap * kept).sum() / kept.sum() - mean))).clamp(min=1e-3)
    loss = -F.logsigmoid(beta_batch * h) * kept
    return loss, {"beta_dpo/beta": beta_batch.detach(), "beta_dpo/kept": kept}


class MarginWeightedParams(LossParams):
    beta: float = Field(0.1, gt=0)
    column: str = Field("score_gap", description="a reward-margin column, or score_gap = score_chosen - score_rejected")
    temperature: float = Field(1.0, gt=0)


def _margin_columns(params: MarginWeightedParams) -> list[str]:
    return ["score_chosen", "score_rejected"] if params.column == "score_gap" else [params.column]


@register_loss("margin_weighted_dpo", MarginWeightedParams, columns=_margin_columns)
def margin_weighted_dpo(logps: PairLogps, beta: float, column: str, temperature: float) -> tuple[torch.Tensor, dict]:
    """Margin-weighted DPO in the spirit of MADPO (Margin-Adaptive DPO, 2025): a reward model's margin m for
    each pair sets a continuous instance weight w = 2 s(-m / T), above 1 for hard pairs (small or negative
    margin), towards 0 for easy ones, and 1 at m = 0; loss w * -log s(b h). No pair is discarded."""
    if column == "score_gap":
        m = logps.column("score_chosen") - logps.column("score_rejected")
    else:
        m = logps.column(column)
    w = 2 * torch.sigmoid(-m / temperature)
    return w * -F.logsigmoid(beta * logps.margin()), {"margin_weighted_dpo/weight": w}


class WPOParams(LossParams):
    beta: float = Field(0.1, gt=0)


@register_loss("wpo", WPOParams, needs=("reference", "wpo"))
def wpo(logps: PairLogps, beta: float) -> tuple[torch.Tensor, dict]:
    """WPO, Zhou et al. 2024, "WPO: Enhancing RLHF with Weighted Preference Optimization": off-policy pairs
    are reweighted by how likely the current policy is to produce them, w = min(1, exp(w_w + w_l)) with
    w_y = mean_t [log p_t - log sum_v p_v^2] (no gradient through w); loss w * -log s(b h)."""
    w = torch.exp(logps.wpo_chosen + logps.wpo_rejected).clamp(max=1.0).detach()
    return w * -F.logsigmoid(beta * logps.margin()), {"wpo/weight": w}
