"""KTO, Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization"."""

from __future__ import annotations

import torch
from pydantic import Field

from prefalign.losses.inputs import UnpairedLogps
from prefalign.losses.registry import LossParams, register_loss


class KTOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    desirable_weight: float = Field(1.0, gt=0)
    undesirable_weight: float = Field(1.0, gt=0)


@register_loss("kto", KTOParams, needs=("reference", "kl_baseline"), kind="unpaired", couples_batch=True)
def kto(logps: UnpairedLogps, beta: float, desirable_weight: float, undesirable_weight: float) -> tuple[torch.Tensor, dict]:
    """Each completion alone, labelled desirable or not. The reference point z0 = max(0, KL estimate) comes
    from the batch's mismatched completions (prompt_i with completion_{i+1}), without gradient, as in the paper:
    desirable:   l_D (1 - s(b (d - z0)))
    undesirable: l_U (1 - s(b (z0 - d)))       with d = log pi(y|x) - log pi_ref(y|x).
    The paper advises l_D n_D / (l_U n_U) in [1, 4/3] when the classes are unbalanced."""
    z0 = (logps.kl_logps - logps.kl_ref).mean().clamp(min=0).detach()
    d = logps.log_ratios()
    desirable = desirable_weight * (1 - torch.sigmoid(beta * (d - z0)))
    undesirable = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - d)))
    return torch.where(logps.labels, desirable, undesirable), {"kto/kl": z0, **_label_rewards(logps, beta * d)}


def _label_rewards(logps: UnpairedLogps, rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """The implicit rewards b d of the desirable and of the undesirable completions, for the log."""
    rewards = rewards.detach()
    return {"rewards/desirable": rewards[logps.labels], "rewards/undesirable": rewards[~logps.labels]}


@register_loss("apo_zero_unpaired", KTOParams, kind="unpaired")  # the same weights and beta as KTO
def apo_zero_unpaired(logps: UnpairedLogps, beta: float, desirable_weight: float,
                      undesirable_weight: float) -> tuple[torch.Tensor, dict]:
    """APO-zero on labelled completions (D'Oosterlinck et al. 2024, "Anchored Preference Optimization and
    Contrastive Revisions", eq. 7 without the pairing; TRL's KTO `apo_zero_unpaired`), with d = log pi/pi_ref:
    desirable:   l_D (1 - s(b d))     raises the likelihood of every desirable completion;
    undesirable: l_U s(b d)           lowers that of every undesirable one.
    Each completion is anchored to the reference on its own: no KL baseline, so no mismatched rows and no
    coupling of the batch. For data whose desirable answers are better than the model's own."""
    d = logps.log_ratios()
    loss = torch.where(logps.labels, desirable_weight * (1 - torch.sigmoid(beta * d)),
                       undesirable_weight * torch.sigmoid(beta * d))
    return loss, _label_rewards(logps, beta * d)
