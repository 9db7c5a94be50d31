"""Negative log-likelihood of the chosen completion, as an SFT regulariser beside a preference loss, and the
one place that says how every loss with an NLL term normalises it."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss

NLLNormalize = Literal["sequence", "tokens"]
NLL_NORMALIZE_HELP = ("how the NLL term is normalised: 'sequence' (each completion's mean token NLL, averaged "
                      "over the step) or 'tokens' (the step's summed NLL over its completion tokens, as TRL's "
                      "cross-entropy and ORPO's authors take it)")


def nll(logp_sum: torch.Tensor, n_tokens: torch.Tensor, normalize: str) -> torch.Tensor:
    """-log pi(y|x) per completion, normalised so that the step's mean of it is
    'sequence': (1/N) sum_i NLL_i / |y_i|       (every completion weighs the same), or
    'tokens':   sum_i NLL_i / sum_j |y_j|       (every token weighs the same: long completions weigh more).
    'tokens' needs the whole step's token count, so a loss using it couples the batch (training/coupled.py)."""
    if normalize == "sequence":
        return -logp_sum / n_tokens
    if normalize == "tokens":
        return -logp_sum / n_tokens.float().mean()
    raise ValueError(f"unknown NLL normalisation {normalize!r} (known: sequence, tokens)")


def couples_when_token_mean(params: LossParams) -> bool:
    """The `couples_batch` of a loss whose NLL term is normalised by the step's token count."""
    return getattr(params, "nll_normalize", "sequence") == "tokens"


class SFTParams(LossParams):
    nll_normalize: Literal["sequence", "tokens", "sum"] = Field(
        "sequence", description=NLL_NORMALIZE_HELP + ", or 'sum' (summed over each completion's tokens)")


@register_loss("sft", SFTParams, needs=(), couples_batch=couples_when_token_mean)
def sft(logps: PairLogps, nll_normalize: str) -> torch.Tensor:
    """-log pi(y_w|x), per token (/|y_w|) by default, as in RPO (Pang et al. 2024, "Iterative Reasoning
    Preference Optimization") where it is added with a weight alpha to the DPO loss."""
    if nll_normalize == "sum":
        return -logps.chosen
    return nll(logps.chosen, logps.chosen_tokens, nll_normalize)
