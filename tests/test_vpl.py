"""Variational preference learning (Poddar et al. 2024): the KL and BALD terms by hand, and on synthetic users
with opposite tastes VPL recovers each user's taste from 4 answers where one Bradley-Terry reward cannot."""

import math

import pytest
import torch
import torch.nn.functional as F

from prefalign.rewards import vpl


def test_kl_to_the_prior_by_hand():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # 1/2 (1 + 1 - 1 - 0) + 1/2 (0 + 2 - 1 - log 2)
    assert vpl.kl_to_prior(mu, logvar).item() == pytest.approx(0.5 + 0.5 * (1 - math.log(2.0)))


class Signed(vpl.VPL):
    """r(y, z) = f(y)_0 * z_0: the latent decides the sign of the preference."""

    def __init__(self) -> None:
        super().__init__(dim=1, latent=1)

    def reward(self, features, z):
        return features[..., 0] * z[:, :1]


def test_bald_is_zero_for_an_uninformative_query_and_log_2_for_a_decisive_one():
    a, b = torch.tensor([[1.0], [50.0], [2.0]]), torch.tensor([[1.0], [-50.0], [1.5]])
    scores = vpl.bald(Signed(), a, b, samples=4000)
    assert scores[0].item() == pytest.approx(0.0, abs=1e-6)  # a equal pair: p = 1/2 whatever z is
    assert scores[1].item() == pytest.approx(math.log(2.0), abs=0.02)  # the answer reveals the sign of z
    assert 0 < scores[2].item() < scores[1].item()


def test_without_a_latent_the_loss_is_bradley_terry():
    model = vpl.VPL(dim=3, latent=0)
    g = torch.Generator().manual_seed(0)
    context = vpl.UserComparisons(torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g))
    target = vpl.UserComparisons(torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g))
    loss, metrics = vpl.elbo_loss(model, context, target, beta=1.0)
    z = torch.zeros(2, 0)
    margin = model.reward(target.chosen, z) - model.reward(target.rejected, z)
    assert loss.item() == pytest.approx(F.softplus(-margin).mean().item()) and metrics["kl"] == 0.0


def _users(n_users: int, n: int, seed: int) -> tuple[list[vpl.UserComparisons], list[int]]:
    """Users who prefer the larger first feature (taste +1) or the smaller (taste -1); the second is noise."""
    g = torch.Generator().manual_seed(seed)
    users, tastes = [], []
    for u in range(n_users):
        taste = 1 if u % 2 == 0 else -1
        a, b = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
        better = ((a[:, 0] - b[:, 0]) * taste > 0).unsqueeze(-1)
        users.append(vpl.UserComparisons(torch.where(better, a, b), torch.where(better, b, a)))
        tastes.append(taste)
    return users, tastes


def test_vpl_learns_each_new_users_taste_from_a_few_answers_where_bradley_terry_cannot():
    train, _ = _users(40, 24, seed=0)
    new, tastes = _users(20, 24, seed=1)
    model = vpl.train_vpl(train, latent=2, steps=400, n_context=4, n_target=8, batch_users=16, lr=3e-3)
    plain = vpl.train_vpl(train, latent=0, steps=400, n_context=4, n_target=8, batch_users=16, lr=3e-3)

    def mean_accuracy(m, taste):
        accs = [vpl.accuracy(m, vpl.UserComparisons(u.chosen[:4], u.rejected[:4]),
                             vpl.UserComparisons(u.chosen[4:], u.rejected[4:])) for u, t in zip(new, tastes) if t == taste]
        return sum(accs) / len(accs)

    for taste in (1, -1):
        assert mean_accuracy(model, taste) > 0.85
    assert min(mean_accuracy(plain, 1), mean_accuracy(plain, -1)) < 0.65  # one reward serves one taste at best
