"""Context-aware preference modelling (Pitis et al. 2024, "Improving Context-Aware Preference Modeling for
Language Models"): a comparison is often ambiguous until a context says what the user wants ("keep it
short"); the reward takes that context explicitly, r(x, y, c) = h([f(x, y), g(c)]), with f and g frozen
sentence embeddings of the response and of the context text. The paper splits the error of serving a user
into two parts, both measured here:

    context selection   which context explains a user's answers: c* = argmax_c sum_i log s(r(y_w^i, c) - r(y_l^i, c))
    preference given c  the accuracy of r(., c) on comparisons whose context is known

Stated as a system message, the same conditioning is Janus's (Lee et al. 2024): train on many phrasings of
what users value, serve unseen ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ContextReward(nn.Module):
    def __init__(self, dim: int, context_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + context_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, features: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """r for features [B, D] and their contexts [B, C] -> [B]."""
        return self.net(torch.cat([features, context], -1)).squeeze(-1)


def train_context_reward(chosen: torch.Tensor, rejected: torch.Tensor, context: torch.Tensor, steps: int = 1500,
                         batch: int = 64, lr: float = 1e-3, seed: int = 0) -> ContextReward:
    """Bradley-Terry on (chosen [N, D], rejected [N, D]) given each pair's context embedding [N, C]; a zero
    context [N, 0] gives the context-free baseline."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ContextReward(chosen.shape[1], context.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(chosen), (batch,), generator=generator)
        loss = F.softplus(-(model(chosen[idx], context[idx]) - model(rejected[idx], context[idx]))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def pair_accuracy(model: ContextReward, chosen: torch.Tensor, rejected: torch.Tensor, context: torch.Tensor) -> float:
    return float(((model(chosen, context) - model(rejected, context)) > 0).float().mean())


@torch.no_grad()
def select_context(model: ContextReward, chosen: torch.Tensor, rejected: torch.Tensor,
                   candidates: torch.Tensor) -> int:
    """The candidate context [K, C] under which a user's answers (chosen, rejected [n, D]) are likeliest."""
    n = len(chosen)
    scores = []
    for c in candidates:
        ctx = c.expand(n, -1)
        scores.append(F.logsigmoid(model(chosen, ctx) - model(rejected, ctx)).sum())
    return int(torch.stack(scores).argmax())
