"""What a pairwise loss sees: completion log-probs of the policy (and reference), lengths, optional
token-level values and data columns. All per-pair tensors have shape [B]; token-level ones [B, T]."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from prefalign.models.sequence_logps import SequenceLogps


@dataclass
class PairLogps:
    # The inputs through which the loss depends on the policy's weights (training/coupled.py).
    policy_fields: ClassVar[tuple[str, ...]] = ("chosen", "rejected")

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_tokens: torch.Tensor  # |y_w| (EOS included)
    rejected_tokens: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    # Token level (present when a loss declares `token_logps` / `reference_token_logps`): zero off the completion.
    chosen_token_logps: torch.Tensor | None = None
    rejected_token_logps: torch.Tensor | None = None
    chosen_mask: torch.Tensor | None = None
    rejected_mask: torch.Tensor | None = None
    ref_chosen_token_logps: torch.Tensor | None = None
    ref_rejected_token_logps: torch.Tensor | None = None
    # WPO's per-sequence weight statistic (present when a loss declares `wpo`).
    wpo_chosen: torch.Tensor | None = None
    wpo_rejected: torch.Tensor | None = None
    # Per-token KL(pi_ref || pi) [B, T] (`token_kl`) and the reference's hidden states [L, B, T, H]
    # (`reference_hidden`), for TDPO and SparsePO.
    chosen_token_kl: torch.Tensor | None = None
    rejected_token_kl: torch.Tensor | None = None
    ref_chosen_hidden: torch.Tensor | None = None
    ref_rejected_hidden: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_outputs(cls, policy: SequenceLogps, reference: SequenceLogps | None, b: int,
                     extras: dict[str, torch.Tensor] | None = None) -> PairLogps:
        """Split 2B rows (chosen first) into a PairLogps."""
        ref = reference or SequenceLogps(None, None)  # type: ignore[arg-type]
        fields: dict[str, torch.Tensor | None] = {}
        for name, t, dim in [("{}", policy.sum, 0), ("{}_tokens", policy.n_tokens, 0), ("ref_{}", ref.sum, 0),
                             ("{}_token_logps", policy.tokens, 0), ("{}_mask", policy.mask, 0),
                             ("ref_{}_token_logps", ref.tokens, 0), ("wpo_{}", policy.wpo, 0),
                             ("{}_token_kl", policy.token_kl, 0), ("ref_{}_hidden", ref.hidden, 1)]:
            if t is not None:
                fields[name.format("chosen")], fields[name.format("rejected")] = t.split(b, dim=dim)
        return cls(**fields, extras=extras or {})

    def log_ratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """d_w = log pi(y_w|x) - log pi_ref(y_w|x), d_l likewise."""
        if self.ref_chosen is None or self.ref_rejected is None:
            raise ValueError("this loss needs reference log-probs, but none were computed")
        return self.chosen - self.ref_chosen, self.rejected - self.ref_rejected

    def margin(self) -> torch.Tensor:
        """h = d_w - d_l, the difference of implicit rewards divided by beta."""
        d_w, d_l = self.log_ratios()
        return d_w - d_l

    def averages(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Length-normalised log-probs avg_w = log pi(y_w|x)/|y_w|, avg_l likewise (SimPO, ORPO, ...)."""
        return self.chosen / self.chosen_tokens, self.rejected / self.rejected_tokens

    def column(self, name: str) -> torch.Tensor:
        if name not in self.extras:
            raise ValueError(f"this loss needs the data column {name!r}, which the batch lacks")
        return self.extras[name]


@dataclass
class ListLogps:
    """k responses per prompt, best first: summed log-probs [B, k], lengths, reference, and which slots are
    real responses (lists shorter than k are padded)."""

    policy_fields: ClassVar[tuple[str, ...]] = ("logps",)

    logps: torch.Tensor
    n_tokens: torch.Tensor
    valid: torch.Tensor
    ref: torch.Tensor | None = None

    def log_ratios(self) -> torch.Tensor:
        if self.ref is None:
            raise ValueError("this loss needs reference log-probs, but none were computed")
        return self.logps - self.ref

    def averages(self) -> torch.Tensor:
        return self.logps / self.n_tokens


@dataclass
class UnpairedLogps:
    """Labelled completions [B] (label True: desirable), and the mismatched completions KTO uses to
    estimate KL(pi || pi_ref)."""

    policy_fields: ClassVar[tuple[str, ...]] = ("logps",)

    logps: torch.Tensor
    n_tokens: torch.Tensor
    labels: torch.Tensor
    ref: torch.Tensor | None = None
    kl_logps: torch.Tensor | None = None
    kl_ref: torch.Tensor | None = None

    def log_ratios(self) -> torch.Tensor:
        if self.ref is None:
            raise ValueError("this loss needs reference log-probs, but none were computed")
        return self.logps - self.ref


@dataclass
class PolicyLogps:
    """What a policy-gradient loss sees, per completion token [N, T] (zero off the completion, `mask` 1 on it):
    the current policy's log-probs (differentiable), the log-probs of the policy that sampled (`old`) and of
    the reference, taken once when the rollout was made, and the advantages. PPO's critic adds its current
    estimates (`values`), those at sampling time (`old_values`) and the returns it regresses on. SRFT reads
    which rows are demonstrations, the outcome rewards and the sampling policy's entropy."""

    logps: torch.Tensor
    old: torch.Tensor
    advantages: torch.Tensor
    mask: torch.Tensor
    ref: torch.Tensor | None = None
    values: torch.Tensor | None = None
    old_values: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    rewards: torch.Tensor | None = None  # [N] each sequence's outcome reward
    demo: torch.Tensor | None = None  # [N] 1 for a demonstration joined to its group (SRFT), else 0
    entropy: float = 0.0  # the sampling policy's mean token entropy over the rollout's own samples

    def ratio(self) -> torch.Tensor:
        """pi_theta(y_t | x, y_<t) / pi_old(y_t | x, y_<t), 1 off the completion."""
        return torch.exp((self.logps - self.old) * self.mask)

    def sequence_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Per sequence [N]: the mean of `values` over its completion tokens."""
        return (values * self.mask).sum(-1) / self.mask.sum(-1).clamp(min=1)
