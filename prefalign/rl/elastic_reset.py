"""Elastic Reset (Noukhovitch et al. 2023): against reward over-optimisation and drift, keep an exponential
moving average of the policy, theta_ema <- decay theta_ema + (1 - decay) theta after every step, and every
`every` steps reset the policy to its average and the average to the initial model. A loop hook; the average
is checkpointed (the initial weights are those the run loads), so a resumed run continues exactly."""

from __future__ import annotations

import torch


class ElasticReset:
    def __init__(self, policy: torch.nn.Module, every: int, decay: float) -> None:
        self.every, self.decay = every, decay
        self.initial = {n: p.detach().clone() for n, p in policy.named_parameters()}
        self.ema = {n: p.clone() for n, p in self.initial.items()}
        self.resets = 0

    @torch.no_grad()
    def after_step(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        params = dict(model.named_parameters())
        for name, avg in self.ema.items():
            avg.mul_(self.decay).add_(params[name].detach().to(avg.dtype), alpha=1 - self.decay)
        if step % self.every == 0:
            for name, avg in self.ema.items():
                params[name].copy_(avg)
                avg.copy_(self.initial[name])
            self.resets += 1
        return {"rl/elastic_resets": float(self.resets)}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": t for n, t in self.ema.items()} | {"resets": torch.tensor(self.resets)}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, avg in self.ema.items():
            avg.copy_(tensors[f"ema.{name}"])
        self.resets = int(tensors["resets"])
