"""The RL objective: per-token policy losses (and the KL term, and PPO's critic) aggregated over a step.

The loop divides an objective's loss sum by the units of the whole step, over all micro-batches and
processes, so each aggregation mode is written as (sum, units) and its gradient does not depend on how the
step is split:
  token_mean     sum_i,t l_it                    / sum_i |y_i|       (DAPO: every token weighs the same)
  sequence_mean  sum_i (sum_t l_it / |y_i|)      / N                 (GRPO: every sequence weighs the same)
  constant       sum_i,t l_it / C                / N                 (Dr. GRPO: C = rl.normaliser)"""

from __future__ import annotations

import torch

from prefalign.config.schema import RLConfig
from prefalign.losses.inputs import PolicyLogps
from prefalign.losses.registry import BoundLoss
from prefalign.models.logprobs import sequence_logps
from prefalign.rl.batch import PolicyBatch
from prefalign.rl.kl import kl_estimate
from prefalign.training.objectives import LossObjective


def critic_term(losses: list[BoundLoss]) -> BoundLoss | None:
    """The loss term that owns a value head (PPO's `value`), if any."""
    return next((t for t in losses if "values" in t.spec.needs), None)


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: str, normaliser: int) -> torch.Tensor:
    """The numerator of the aggregation mode (the loop divides by `units`)."""
    masked = per_token * mask
    if mode == "sequence_mean":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1)).sum()
    if mode == "constant":
        return masked.sum() / normaliser
    return masked.sum()


class PolicyObjective(LossObjective):
    def __init__(self, losses: list[BoundLoss], cfg: RLConfig, logp_chunk: int | None = None) -> None:
        super().__init__(losses, None, logp_chunk)
        self.mode = cfg.aggregation
        self.normaliser = cfg.normaliser or cfg.max_new_tokens
        self.kl = cfg.kl
        self.temperature = cfg.temperature  # the sampler's: ratios and KL are taken under its distribution
        self.critic = critic_term(losses)

    def units(self, batch: PolicyBatch) -> int:
        return int(batch.mask.sum()) if self.mode == "token_mean" else batch.num_sequences

    def values(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The critic's estimates [N, T] from final hidden states [N, T, H]."""
        head = self.critic.module
        return head(hidden.to(next(head.parameters()).dtype)).squeeze(-1).float() * mask

    def policy_logps(self, model: torch.nn.Module, batch: PolicyBatch) -> PolicyLogps:
        out = sequence_logps(model, batch.tokens, keep_tokens=True, keep_final_hidden=self.critic is not None,
                             chunk=self.logp_chunk, temperature=self.temperature)
        logps = out.tokens.float()
        old = logps.detach() if batch.old is None else batch.old
        values = None if self.critic is None else self.values(out.final_hidden, batch.mask)
        return PolicyLogps(logps, old, batch.advantages, batch.mask, batch.ref, values, batch.old_values,
                           batch.returns, batch.rewards, batch.demo, batch.entropy)

    def loss(self, model: torch.nn.Module, batch: PolicyBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.policy_logps(model, batch)
        metrics: dict[str, torch.Tensor] = {}
        per_token = self._sum_terms(x, model.training, metrics)
        if x.ref is not None:
            kl = kl_estimate(x.logps, x.ref, self.kl.estimator) * x.mask
            metrics["rl/kl_policy"] = kl.detach().sum(-1)
            if self.kl.placement == "loss" and batch.kl_coef > 0:
                per_token = per_token + batch.kl_coef * kl
        metrics["rl/ratio"] = x.sequence_mean(x.ratio().detach())
        return aggregate(per_token, x.mask, self.mode, self.normaliser), metrics
