"""AOT, Melnyk et al. 2024, "Distributional Preference Alignment of LLMs via Optimal Transport"."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss


class AOTParams(LossParams):
    beta: float = Field(0.1, gt=0)
    paired: bool = True
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)


@register_loss("aot", AOTParams, couples_batch=True)
def aot(logps: PairLogps, beta: float, paired: bool, label_smoothing: float) -> torch.Tensor:
    """Stochastic dominance of the chosen over the rejected reward distribution, by optimal transport in
    one dimension: sort across the batch, then a logistic loss on the sorted differences.
    paired: sort the policy margins (log pi_w - log pi_l) and the reference margins separately, delta =
    sorted policy - sorted reference. unpaired (paired=false): sort d_w and d_l separately, delta = sorted
    d_w - sorted d_l, which needs no pairing at all. Loss -(1-e) log s(b delta) - e log s(-b delta).
    The loss of an example depends on the whole step's batch (however it is split), so batch size matters here."""
    if paired:
        policy = torch.sort(logps.chosen - logps.rejected).values
        reference = torch.sort(logps.ref_chosen - logps.ref_rejected).values
        delta = policy - reference
    else:
        d_w, d_l = logps.log_ratios()
        delta = torch.sort(d_w).values - torch.sort(d_l).values
    return -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
