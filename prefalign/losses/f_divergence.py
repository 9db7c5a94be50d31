"""f-DPO, Wang et al. 2023, "Beyond Reverse KL: Generalizing Direct Preference Optimization with Diverse
Divergence Constraints"."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss

MAX_EXPONENT = 40.0  # exp() of a log-ratio is capped so that one wild sample cannot overflow the loss


class FDPOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    divergence: Literal["reverse_kl", "forward_kl", "js", "alpha"] = "reverse_kl"
    alpha: float = Field(0.5, gt=0, lt=1)


def _capped_exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x.clamp(max=MAX_EXPONENT))


@register_loss("f_dpo", FDPOParams)
def f_dpo(logps: PairLogps, beta: float, divergence: str, alpha: float) -> tuple[torch.Tensor, dict]:
    """-log s(b [f'(u_w) - f'(u_l)]) with u = pi/pi_ref, for the f-divergence of the KL constraint:
    reverse KL f'(u) = log u + 1 (DPO); forward KL f'(u) = -1/u; Jensen-Shannon f'(u) = log(2u/(1+u));
    alpha-divergence f'(u) = (1 - u^-a)/a (forward KL at a -> 1, reverse KL at a -> 0).

    The forward-KL and alpha forms exponentiate log-ratios; exp is capped at e^40 so one wild sample cannot
    overflow the loss. A term whose exponent passes the cap gets exactly zero gradient (the clamp is flat
    there): a chosen response whose log-ratio is below -40 is not pushed up through its own term, while the
    rejected response's term keeps its gradient."""
    d_w, d_l = logps.log_ratios()
    if divergence == "reverse_kl":
        logits = d_w - d_l
    elif divergence == "forward_kl":
        logits = _capped_exp(-d_l) - _capped_exp(-d_w)
    elif divergence == "js":
        logits = (d_w - d_l) - (F.softplus(d_w) - F.softplus(d_l))
    else:
        logits = (_capped_exp(-alpha * d_l) - _capped_exp(-alpha * d_w)) / alpha
    return -F.logsigmoid(beta * logits), {"f_dpo/logits": logits.detach()}
