"""RTO's dense reward (Zhong et al. 2024, "DPO Meets PPO: Reinforced Token Optimization for RLHF").

A DPO-trained policy pi_dpo and the reference it was trained against pi_dpo_ref define a token-wise reward
(DPO's implicit reward, read one token at a time),

    r_t = beta * (log pi_dpo(y_t | x, y_<t) - log pi_dpo_ref(y_t | x, y_<t)),

which RTO adds to every completion token's reward for PPO. The rest of RTO's reward is what `rl` already
has: the KL penalty to the RL reference in the reward (rl.kl.placement: reward) and, optionally, a
sentence-level reward on the last token (rl.rewards). Both models are frozen and read at temperature 1:
the reward is the DPO model's, whatever temperature the policy samples at."""

from __future__ import annotations

import torch

from prefalign.models.reference import Reference


def dpo_token_rewards(dpo_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """r_t = beta (log pi_dpo - log pi_dpo_ref), per completion token."""
    return beta * (dpo_logps - ref_logps)


class DPOTokenReward:
    """Scores a rollout batch's completion tokens with RTO's r_t (see the module doc); both models are frozen
    references, read at temperature 1."""

    def __init__(self, dpo: Reference, reference: Reference, beta: float) -> None:
        self.dpo, self.reference, self.beta = dpo, reference, beta

    def __call__(self, batch: object) -> torch.Tensor:
        """[N, T] token rewards on the engine's per-token grid of `batch` (a padded or packed policy batch)."""
        dpo = self.dpo.outputs(batch, keep_tokens=True).tokens.float()
        ref = self.reference.outputs(batch, keep_tokens=True).tokens.float()
        return dpo_token_rewards(dpo, ref, self.beta)
