"""Variational preference learning (VPL; Poddar et al. 2024, "Personalizing Reinforcement Learning from
Human Feedback with Variational Preference Learning").

Responses are frozen features f(x, y) in R^D (sentence embeddings). A user is a latent z in R^d inferred
from a few of their comparisons C = {(y_w^i, y_l^i)}: each is encoded as e_i = g([f_w^i, f_l^i]), their mean
gives the posterior q(z | C) = N(mu, diag sigma^2), and the reward is conditioned on it, r(x, y, z) =
h([f(x, y), z]). One training episode is one user: z = mu + sigma * eps from C, and on their other
comparisons T the ELBO

    loss = -1/|T| sum_{j in T} log s(r(y_w^j, z) - r(y_l^j, z)) + beta KL(q(z | C) || N(0, I))

A new user is served by the posterior mean from a few of their answers. Which comparisons to ask them can
be chosen by the latent's uncertainty (`bald`): the answer most informative about z under the prior,
H[E_z p] - E_z H[p] with p = s(r(y_a, z) - r(y_b, z)). With `latent=0` the model is a plain Bradley-Terry
reward on the same features (no user), the baseline VPL is measured against."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UserComparisons:
    """One user's comparisons: features of the chosen and rejected responses, [n, D] each."""

    chosen: torch.Tensor
    rejected: torch.Tensor


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                         nn.Linear(hidden, out))


class VPL(nn.Module):
    def __init__(self, dim: int, latent: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.latent = latent
        self.reward_net = _mlp(dim + latent, hidden, 1)
        if latent:
            self.pair_net = _mlp(2 * dim, hidden, 2 * latent)

    def posterior(self, chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | C) for contexts [U, N, D]: mean and log-variance, [U, d] each (the mean of the N encodings)."""
        if not self.latent:
            zeros = chosen.new_zeros(chosen.shape[0], 0)
            return zeros, zeros
        mu, logvar = self.pair_net(torch.cat([chosen, rejected], -1)).mean(1).chunk(2, -1)
        return mu, logvar.clamp(-8, 4)

    def reward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """r(x, y, z) for features [U, M, D] and each user's latent [U, d] -> [U, M]."""
        z = z.unsqueeze(1).expand(-1, features.shape[1], -1)
        return self.reward_net(torch.cat([features, z], -1)).squeeze(-1)


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per user: 1/2 sum_k (mu_k^2 + sigma_k^2 - 1 - log sigma_k^2)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)


def elbo_loss(model: VPL, context: UserComparisons, target: UserComparisons, beta: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The negative ELBO of a batch of users: contexts [U, N, D], targets [U, M, D]."""
    mu, logvar = model.posterior(context.chosen, context.rejected)
    eps = torch.randn(mu.shape, generator=generator) if model.latent else mu
    z = mu + (0.5 * logvar).exp() * eps
    margin = model.reward(target.chosen, z) - model.reward(target.rejected, z)
    nll, kl = F.softplus(-margin).mean(), kl_to_prior(mu, logvar).mean()
    return nll + beta * kl, {"nll": nll.item(), "kl": kl.item(), "accuracy": (margin > 0).float().mean().item()}


def episodes(users: list[UserComparisons], n_users: int, n_context: int, n_target: int,
             generator: torch.Generator) -> tuple[UserComparisons, UserComparisons]:
    """A batch of users, each with distinct comparisons split into a context and targets."""
    picked = torch.randint(len(users), (n_users,), generator=generator).tolist()
    parts = []
    for u in picked:
        order = torch.randperm(len(users[u].chosen), generator=generator)[:n_context + n_target]
        parts.append((users[u].chosen[order], users[u].rejected[order]))
    chosen, rejected = torch.stack([c for c, _ in parts]), torch.stack([r for _, r in parts])
    return (UserComparisons(chosen[:, :n_context], rejected[:, :n_context]),
            UserComparisons(chosen[:, n_context:], rejected[:, n_context:]))


def train_vpl(users: list[UserComparisons], latent: int = 8, steps: int = 1500, n_context: int = 4,
              n_target: int = 8, batch_users: int = 32, beta: float = 0.01, lr: float = 1e-3, hidden: int = 64,
              seed: int = 0) -> VPL:
    """Fit VPL (or, with latent 0, the Bradley-Terry baseline) by episodes of `batch_users` users."""
    short = min(len(u.chosen) for u in users)
    if short < n_context + n_target:
        raise ValueError(f"VPL: a user has {short} comparisons; an episode needs {n_context} + {n_target}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = VPL(users[0].chosen.shape[1], latent, hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        context, target = episodes(users, batch_users, n_context, n_target, generator)
        loss, _ = elbo_loss(model, context, target, beta, generator)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def user_latent(model: VPL, context: UserComparisons) -> torch.Tensor:
    """The posterior mean [d] of one user from their answered comparisons [N, D]."""
    mu, _ = model.posterior(context.chosen.unsqueeze(0), context.rejected.unsqueeze(0))
    return mu[0]


@torch.no_grad()
def accuracy(model: VPL, context: UserComparisons, held: UserComparisons) -> float:
    """How often the user's held-out choices get the higher reward, with z from their context."""
    z = user_latent(model, context).unsqueeze(0)
    margin = model.reward(held.chosen.unsqueeze(0), z) - model.reward(held.rejected.unsqueeze(0), z)
    return float((margin > 0).float().mean())


def _entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


@torch.no_grad()
def bald(model: VPL, a: torch.Tensor, b: torch.Tensor, samples: int = 256, seed: int = 0) -> torch.Tensor:
    """Per candidate comparison (features [Q, D] of its two responses), the mutual information between the
    answer and z under the prior: H[E_z p] - E_z H[p]."""
    z = torch.randn(samples, model.latent, generator=torch.Generator().manual_seed(seed))
    ra = model.reward(a.unsqueeze(0).expand(samples, -1, -1), z)
    rb = model.reward(b.unsqueeze(0).expand(samples, -1, -1), z)
    p = torch.sigmoid(ra - rb)  # [S, Q]
    return _entropy(p.mean(0)) - _entropy(p).mean(0)
