"""DFT, Guo et al. 2025, "Discriminative Finetuning of Generative Large Language Models without Reward Models
and Preference Data"."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from prefalign.losses.inputs import ListLogps
from prefalign.losses.registry import LossParams, register_loss


class DFTParams(LossParams):
    temperature: float = Field(1.0, gt=0, description="tau in exp(s / tau)")
    length_normalize: bool = Field(False, description="score s = mean token log-prob (else summed)")


@register_loss("dft", DFTParams, kind="ranking")
def dft(logps: ListLogps, temperature: float, length_normalize: bool) -> tuple[torch.Tensor, dict]:
    """The answer's likelihood among all outputs, P(y|x) = exp(s(y)/tau) / sum_y' exp(s(y')/tau), s the
    policy's log-prob, maximised with the sum estimated from k negatives y'_j sampled from pi_0 (the
    reference) by importance sampling:
        loss = -s(y)/tau + log (1/k) sum_j exp(s(y'_j)/tau - log pi_0(y'_j|x))
    Lists are (answer, negatives...): SFT data plus the base model's own samples, no preference labels. With
    tau = 1 and summed scores this is the answer's NLL plus the log mean likelihood ratio pi/pi_0 of the
    negatives. The paper's moving-average estimator of the sum across steps is not kept: each step uses
    its own negatives (a biased but consistent estimate as k grows)."""
    scores = logps.averages() if length_normalize else logps.logps
    negatives = logps.valid.clone()
    negatives[:, 0] = False
    k = negatives.sum(1)
    if bool((k == 0).any()):
        raise ValueError("dft needs lists of an answer and at least one sampled negative")
    terms = (scores / temperature - logps.ref).masked_fill(~negatives, -math.inf)
    partition = torch.logsumexp(terms, dim=1) - torch.log(k.float())
    return -scores[:, 0] / temperature + partition, {"dft/log_partition": partition.detach()}
