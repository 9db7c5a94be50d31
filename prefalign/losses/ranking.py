"""Losses over a prompt with k ranked responses (best first). Lists shorter than the batch's k are padded;
`valid` marks real responses."""

from __future__ import annotations

import torch
from pydantic import Field

from prefalign.losses.inputs import ListLogps
from prefalign.losses.registry import LossParams, register_loss
from prefalign.losses.sft import NLL_NORMALIZE_HELP, NLLNormalize, couples_when_token_mean, nll

_NEG = -1e9  # a finite "minus infinity", so that padded slots give zero (not NaN) gradients


def plackett_luce_nll(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """-log P(observed order) under Plackett-Luce: sum over positions i (with a valid i+1) of
    -(s_i - logsumexp_{j >= i} s_j). scores, valid: [B, k]; valid slots come first in each row."""
    masked = scores.masked_fill(~valid, _NEG)
    loss = torch.zeros(scores.shape[0], dtype=scores.dtype, device=scores.device)
    for i in range(scores.shape[1] - 1):
        term = torch.logsumexp(masked[:, i:], dim=-1) - masked[:, i]
        loss = loss + torch.where(valid[:, i + 1], term, torch.zeros_like(term))
    return loss


def _ordered_accuracy(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fraction of adjacent valid positions whose scores are in the observed order, per list."""
    ok = (scores[:, :-1] > scores[:, 1:]) & valid[:, 1:]
    return ok.sum(-1) / valid[:, 1:].sum(-1).clamp(min=1)


class ListwiseDPOParams(LossParams):
    beta: float = Field(0.1, gt=0)


@register_loss("listwise_dpo", ListwiseDPOParams, kind="ranking")
def listwise_dpo(logps: ListLogps, beta: float) -> tuple[torch.Tensor, dict]:
    """Plackett-Luce DPO, Rafailov et al. 2023 (DPO paper, appendix A.3): the implicit rewards r = b d of the
    k responses explain their ranking, -sum_i log [exp(r_i) / sum_{j>=i} exp(r_j)]. k = 2 is DPO."""
    r = beta * logps.log_ratios()
    return plackett_luce_nll(r, logps.valid), {"ranking/accuracy": _ordered_accuracy(r.detach(), logps.valid)}


class PROParams(LossParams):
    sft_weight: float = Field(0.05, ge=0)
    temperature: float = Field(1.0, gt=0)
    nll_normalize: NLLNormalize = Field("sequence", description=NLL_NORMALIZE_HELP)


@register_loss("pro", PROParams, needs=(), kind="ranking", couples_batch=couples_when_token_mean)
def pro(logps: ListLogps, sft_weight: float, temperature: float, nll_normalize: str) -> tuple[torch.Tensor, dict]:
    """PRO, Song et al. 2023, "Preference Ranking Optimization for Human Alignment": Plackett-Luce over the
    length-normalised log-probs (1/|y|) log pi(y|x) / T, reference-free, plus an SFT term on the best
    response: -sum_i log [exp(s_i) / sum_{j>=i} exp(s_j)] + w NLL(y_1)/|y_1|."""
    avg = logps.averages()
    best_nll = nll(logps.logps[:, 0], logps.n_tokens[:, 0], nll_normalize)
    return plackett_luce_nll(avg / temperature, logps.valid) + sft_weight * best_nll, {
        "ranking/accuracy": _ordered_accuracy(avg.detach(), logps.valid), "pro/nll": best_nll.detach()}


class RRHFParams(LossParams):
    sft_weight: float = Field(1.0, ge=0)
    nll_normalize: NLLNormalize = Field("sequence", description=NLL_NORMALIZE_HELP)


@register_loss("rrhf", RRHFParams, needs=(), kind="ranking", couples_batch=couples_when_token_mean)
def rrhf(logps: ListLogps, sft_weight: float, nll_normalize: str) -> tuple[torch.Tensor, dict]:
    """RRHF, Yuan et al. 2023, "RRHF: Rank Responses to Align Language Models with Human Feedback": with
    p = (1/|y|) log pi(y|x), a hinge on every mis-ordered pair, sum_{i<j} max(0, p_j - p_i), plus
    w NLL(y_1)/|y_1| on the best response."""
    p = logps.averages()
    better = torch.triu(torch.ones(p.shape[1], p.shape[1], dtype=torch.bool, device=p.device), diagonal=1)
    both = logps.valid.unsqueeze(2) & logps.valid.unsqueeze(1) & better  # [B, i, j]: i ranked above j
    rank = (torch.relu(p.unsqueeze(1) - p.unsqueeze(2)) * both).sum((1, 2))
    best_nll = nll(logps.logps[:, 0], logps.n_tokens[:, 0], nll_normalize)
    return rank + sft_weight * best_nll, {"ranking/accuracy": _ordered_accuracy(p.detach(), logps.valid)}
