"""Token-level DPO: TDPO (sequential KL per token) and SparsePO (token masks on the reward and KL terms).

Notation, per completion y: r_t = log pi(y_t|x,y_<t) - log pi_ref(y_t|x,y_<t) and
KL_t = KL(pi_ref(.|x,y_<t) || pi(.|x,y_<t)) over the whole vocabulary; D_seq(y) = sum_t KL_t."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from prefalign.losses.inputs import PairLogps
from prefalign.losses.registry import LossParams, register_loss


class TDPOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    alpha: float = Field(0.5, ge=0, description="TDPO2's weight on the KL difference")
    variant: Literal[1, 2] = 2


@register_loss("tdpo", TDPOParams, needs=("reference", "token_kl"))
def tdpo(logps: PairLogps, beta: float, alpha: float, variant: int) -> tuple[torch.Tensor, dict]:
    """TDPO, Zeng et al. 2024, "Token-level Direct Preference Optimization".
    delta = D_seq(y_l) - D_seq(y_w) (sequential forward KL of the reference to the policy).
    TDPO1: -log s(b (h - delta));  TDPO2: -log s(b (h - alpha (D_seq(y_l) - sg[D_seq(y_w)]))).
    The stop-gradient keeps TDPO2 from raising the chosen response's KL to widen the margin."""
    kl_w, kl_l = logps.chosen_token_kl.sum(-1), logps.rejected_token_kl.sum(-1)
    h = logps.margin()
    if variant == 1:
        logits = h - (kl_l - kl_w)
    else:
        logits = h - alpha * (kl_l - kl_w.detach())
    return -F.logsigmoid(beta * logits), {"tdpo/seq_kl_chosen": kl_w.detach(), "tdpo/seq_kl_rejected": kl_l.detach()}


# -- SparsePO ----------------------------------------------------------------------------------------------


class SparsePOParams(LossParams):
    beta: float = Field(0.1, gt=0)
    mask: Literal["learned", "reference"] = Field(
        "learned", description="learned: a head on the reference's hidden states, trained with the policy; "
                               "reference: derived from the reference's activations (fixed)")
    independent: bool = Field(False, description="separate masks for the reward and the KL terms (learned mask)")
    mask_reward: bool = True
    mask_kl: bool = True
    l1_reward: float = Field(0.0, ge=0, description="L1 penalty on the reward mask (sparsity)")
    l1_kl: float = Field(0.0, ge=0, description="L1 penalty on the KL mask")
    dropout: float = Field(0.1, ge=0, lt=1)


class LearnedTokenMask(torch.nn.Module):
    """SparsePO's learned mask: per layer l, relu(w_l . LayerNorm(h_l) + b_l); the layers are mixed by a
    linear map without bias and a final relu, so many tokens get exactly 0 (a sparse mask).

    It starts near the all-ones mask (small weights, per-layer bias 1, mixer 1/L), i.e. near TDPO1; a random
    start can put every token below the final relu, where the mask and its gradient are 0 for good."""

    def __init__(self, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden)
        self.per_layer = torch.nn.ModuleList(torch.nn.Linear(hidden, 1) for _ in range(layers))
        self.mixer = torch.nn.Linear(layers, 1, bias=False)
        self.dropout = torch.nn.Dropout(dropout)
        with torch.no_grad():
            for linear in self.per_layer:
                linear.weight.normal_(0.0, 0.02)
                linear.bias.fill_(1.0)
            self.mixer.weight.fill_(1.0 / layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [L, N, T, H] -> mask [N, T]."""
        per_layer = [self.dropout(F.relu(w(self.norm(h.float())))) for w, h in zip(self.per_layer, hidden)]
        return self.dropout(F.relu(self.mixer(torch.cat(per_layer, dim=-1)))).squeeze(-1)


def reference_activation_mask(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SparsePO's model-activation mask: each layer's mean activation per token, z-normalised over the
    completion, rescaled to [0, 1] over the completion; averaged over layers ([L, N, T, H] -> [N, T])."""
    act = hidden.float().mean(-1)  # [L, N, T]
    on = mask.bool().expand_as(act)
    n = mask.sum(-1).clamp(min=1)
    mean = (act * mask).sum(-1, keepdim=True) / n[..., None]
    std = (((act - mean) * mask) ** 2).sum(-1, keepdim=True).div((n - 1).clamp(min=1)[..., None]).sqrt()
    z = (act - mean) / (std + 1e-6)
    lo = z.masked_fill(~on, float("inf")).amin(-1, keepdim=True)
    hi = z.masked_fill(~on, float("-inf")).amax(-1, keepdim=True)
    scaled = (z - lo) / (hi - lo).clamp(min=1e-6)
    return (scaled * mask).mean(0)


def _sparsepo_module(params: SparsePOParams, policy: torch.nn.Module) -> torch.nn.Module | None:
    if params.mask != "learned":
        return None
    cfg = policy.config
    heads = ["reward", "kl"] if params.independent else ["common"]
    return torch.nn.ModuleDict({name: LearnedTokenMask(cfg.hidden_size, cfg.num_hidden_layers, params.dropout)
                                for name in heads})


@register_loss("sparsepo", SparsePOParams, module=_sparsepo_module,
               needs=("reference", "token_logps", "reference_token_logps", "token_kl", "reference_hidden"))
def sparsepo(logps: PairLogps, beta: float, mask: str, independent: bool, mask_reward: bool, mask_kl: bool,
             l1_reward: float, l1_kl: float, dropout: float, module: torch.nn.ModuleDict | None) -> tuple[torch.Tensor, dict]:
    """SparsePO, Christopoulou et al. 2024, "SparsePO: Controlling Preference Alignment of LLMs via Sparse
    Token Masks". With token masks m^u (reward) and m^d (KL) in [0, inf):
      u = sum_t m^u_t r_t(y_w) - sum_t m^u_t r_t(y_l),   delta = sum_t m^d_t KL_t(y_l) - sum_t m^d_t KL_t(y_w)
      loss = -log s(b (u - delta)) + l1_u (|m^u(y_w)|_1 + |m^u(y_l)|_1) + l1_d (|m^d(y_w)|_1 + |m^d(y_l)|_1)
    All-ones masks give TDPO1. The learned mask reads the reference's hidden states of every layer (one mask
    for both terms, or one each with `independent`); the reference mask is fixed, from its activations."""
    def masks(hidden: torch.Tensor, on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward mask, KL mask) of one side; all-ones where a term is not masked."""
        if mask == "reference":
            m_u = m_d = reference_activation_mask(hidden, on)
        elif independent:
            m_u, m_d = module["reward"](hidden) * on, module["kl"](hidden) * on
        else:
            m_u = m_d = module["common"](hidden) * on
        return (m_u if mask_reward else on), (m_d if mask_kl else on)

    m_u_w, m_d_w = masks(logps.ref_chosen_hidden, logps.chosen_mask)
    m_u_l, m_d_l = masks(logps.ref_rejected_hidden, logps.rejected_mask)
    ones_w, ones_l = logps.chosen_mask, logps.rejected_mask
    r_w = logps.chosen_token_logps - logps.ref_chosen_token_logps
    r_l = logps.rejected_token_logps - logps.ref_rejected_token_logps
    u = (m_u_w * r_w).sum(-1) - (m_u_l * r_l).sum(-1)
    delta = (m_d_l * logps.rejected_token_kl).sum(-1) - (m_d_w * logps.chosen_token_kl).sum(-1)
    loss = -F.logsigmoid(beta * (u - delta))
    if mask_reward and l1_reward:
        loss = loss + l1_reward * (m_u_w.abs().sum(-1) + m_u_l.abs().sum(-1))
    if mask_kl and l1_kl:
        loss = loss + l1_kl * (m_d_w.abs().sum(-1) + m_d_l.abs().sum(-1))
    n_tokens = ones_w.sum(-1) + ones_l.sum(-1)
    zero_share = (((m_u_w == 0) & (ones_w > 0)).sum(-1) + ((m_u_l == 0) & (ones_l > 0)).sum(-1)) / n_tokens
    return loss, {"sparsepo/reward_mask_mean": ((m_u_w.sum(-1) + m_u_l.sum(-1)) / n_tokens).detach(),
                  "sparsepo/reward_mask_zero_share": zero_share.detach().float(),
                  "sparsepo/u": u.detach(), "sparsepo/delta": delta.detach()}
