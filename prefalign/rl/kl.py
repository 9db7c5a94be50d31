"""KL to the reference, per token, and the adaptive coefficient.

With tokens sampled from pi and the log-ratio l = log pi_ref(y_t|.) - log pi(y_t|.), Schulman's estimators
of KL(pi || pi_ref) (http://joschu.net/blog/kl-approx.html):
  k1 = -l                 unbiased, high variance, can be negative
  k2 = l^2 / 2            biased, low variance, its gradient is that of the reverse KL's
  k3 = exp(l) - 1 - l     unbiased and never negative (GRPO's KL term)

Where it goes (`rl.kl.placement`):
  reward  r_t -= beta k(pi_old, pi_ref) per token, at sampling time (InstructGPT, PPO, RLOO, REINFORCE++)
  loss    l_t += beta k(pi_theta, pi_ref) per token, differentiated (GRPO)
  none    no KL term (DAPO, Dr. GRPO drop it)
The adaptive controller (Ziegler et al. 2019) moves beta towards a target KL each rollout:
  e = clip(KL / target - 1, -0.2, 0.2),  beta <- beta (1 + e n / horizon), n the sequences of the rollout."""

from __future__ import annotations

import torch


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from log-probs of tokens sampled from pi."""
    log_ratio = ref_logps - logps
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return torch.exp(log_ratio) - 1 - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; known: k1, k2, k3")


def adapt_kl_coef(coef: float, kl: float, target: float, horizon: int, n: int) -> float:
    """One step of Ziegler et al.'s proportional controller (see the module doc)."""
    error = max(-0.2, min(0.2, kl / target - 1))
    return coef * (1 + error * n / horizon)
