"""Triples: a gold response, a preferred and a less preferred one, learned in one step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import ListLogps
from prefalign.losses.registry import LossParams, register_loss
from prefalign.losses.sft import NLL_NORMALIZE_HELP, NLLNormalize, couples_when_token_mean, nll


class TPOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    alpha: float = Field(0.5, ge=0, description="weight of the NLL on the gold response")
    length_normalize: bool = Field(False, description="TPO-L: compare mean token log-probs")
    gamma: float = Field(0.0, ge=0, description="TPO-L's target margin")
    nll_normalize: NLLNormalize = Field("sequence", description=NLL_NORMALIZE_HELP)


@register_loss("tpo", TPOParams, needs=(), kind="ranking", couples_batch=couples_when_token_mean)
def tpo(logps: ListLogps, beta: float, alpha: float, length_normalize: bool, gamma: float,
        nll_normalize: str) -> tuple[torch.Tensor, dict]:
    """TPO, Saeidi et al. 2024, "Triple Preference Optimization: Achieving Better Alignment using a Single
    Step Optimization". Lists of three, in order (y_gold, y_w, y_l); reference-free:
        loss = -log s(b (log pi(y_w|x) - log pi(y_l|x)) - g) + alpha * NLL(y_gold)/|y_gold|
    with mean log-probs in place of sums for TPO-L (length_normalize). The gold response is only imitated,
    never compared."""
    if logps.logps.shape[1] != 3 or not bool(logps.valid.all()):
        raise ValueError("tpo needs lists of exactly three responses: gold, chosen, rejected (data.format: triple)")
    scores = logps.averages() if length_normalize else logps.logps
    margin = scores[:, 1] - scores[:, 2]
    nll_gold = nll(logps.logps[:, 0], logps.n_tokens[:, 0], nll_normalize)
    loss = -F.logsigmoid(beta * margin - gamma) + alpha * nll_gold
    return loss, {"tpo/margin": margin.detach(), "tpo/nll_gold": nll_gold.detach()}
