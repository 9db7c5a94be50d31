"""ScPO, Prasad et al. 2024, "Self-Consistency Preference Optimization"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss
from prefalign.losses.sft import NLL_NORMALIZE_HELP, NLLNormalize, couples_when_token_mean, nll


class ScPOParams(LossParams):
    beta: float = Field(0.5, gt=0)
    alpha: float = Field(1.0, ge=0, description="weight of the length-normalised NLL of the chosen answer")
    nll_normalize: NLLNormalize = Field("sequence", description=NLL_NORMALIZE_HELP)


def _vote_columns(params: ScPOParams) -> list[str]:
    return ["score_chosen", "score_rejected"]


@register_loss("scpo", ScPOParams, columns=_vote_columns, couples_batch=couples_when_token_mean)
def scpo(logps: PairLogps, beta: float, alpha: float, nll_normalize: str) -> tuple[torch.Tensor, dict]:
    """The most-voted answer y+ against the least-voted y-, weighted by the vote margin
    w = (V(y+) - V(y-)) / k, which the `self_consistency` scorer gives as score_chosen - score_rejected:
    loss = -w log s(b h) - a w log pi(y+|x) / |y+|  (IRPO's NLL term on the chosen answer, weighted alike).
    Confident prompts (a clear majority) weigh more; no gold label is read (Prasad et al. 2024)."""
    w = logps.column("score_chosen") - logps.column("score_rejected")
    chosen_nll = nll(logps.chosen, logps.chosen_tokens, nll_normalize)
    return w * (-F.logsigmoid(beta * logps.margin()) + alpha * chosen_nll), {"scpo/weight": w}
