"""PCRM, Zhou et al. 2024, "Prior Constraints-based Reward Model Training for Aligning Large Language Models".

A pair's preference margin d is pushed up by the usual ranking term and held under a bound delta* that a prior
sets from how alike the two responses are:

    loss = -log s(d) - log s(delta* - d),    delta* = beta1 / (sim + beta2) + beta3

Alike responses (sim near 1) get a small bound, different ones a large one, so margins stop growing without
limit. `sim` is the length ratio min(|y_w|, |y_l|) / max(|y_w|, |y_l|) (of whole responses, where the authors'
code counts from the first token in which the two differ) or, from a data column, the cosine
similarity of the two responses' sentence embeddings (`prefalign data similarity`). The same two terms serve
reward-model training (d = r_w - r_l, `reward.prior_constraint`) and DPO (d = beta h, the loss `pcrm`)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss


def length_ratio(n_chosen: torch.Tensor, n_rejected: torch.Tensor) -> torch.Tensor:
    """min / max of the two responses' token counts, in (0, 1]."""
    return torch.minimum(n_chosen, n_rejected) / torch.maximum(n_chosen, n_rejected).clamp(min=1)


def margin_bound(similarity: torch.Tensor, beta1: float, beta2: float, beta3: float) -> torch.Tensor:
    """delta* = beta1 / (sim + beta2) + beta3: the largest margin the prior allows (not differentiated)."""
    return (beta1 / (similarity + beta2) + beta3).detach()


def bounded_ranking_loss(margin: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """-log s(d) - log s(delta* - d): rank the pair, and keep its margin under the bound."""
    return -F.logsigmoid(margin) - F.logsigmoid(bound - margin)


class PCRMParams(LossParams):
    beta: float = Field(0.1, gt=0)
    similarity: Literal["length_ratio", "column"] = "length_ratio"
    column: str = Field("similarity", description="similarity column: a number per pair in [0, 1]")
    # The paper's DPO run with the length ratio (beta1 20, beta2 0.001, beta3 -15): delta* = 5 at sim 1.
    beta1: float = Field(20.0, gt=0)
    beta2: float = Field(0.001, gt=0)
    beta3: float = -15.0


def _pcrm_columns(p: PCRMParams) -> list[str]:
    return [p.column] if p.similarity == "column" else []


@register_loss("pcrm", PCRMParams, columns=_pcrm_columns)
def pcrm(logps: PairLogps, beta: float, similarity: str, column: str, beta1: float, beta2: float,
         beta3: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO with PCRM's prior constraint (Zhou et al. 2024): -log s(z) - log s(delta* - z), z = beta h,
    delta* = beta1 / (sim + beta2) + beta3 from the length ratio or a similarity column."""
    z = beta * logps.margin()
    if similarity == "length_ratio":
        sim = length_ratio(logps.chosen_tokens.to(z), logps.rejected_tokens.to(z))
    else:
        sim = logps.column(column).to(z)
    bound = margin_bound(sim, beta1, beta2, beta3)
    return bounded_ranking_loss(z, bound), {"pcrm/bound": bound, "pcrm/over_bound": (z > bound).float()}
