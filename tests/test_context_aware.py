"""Context-aware preference models (Pitis et al. 2024): a stated context resolves comparisons that are
ambiguous without it, and the context that explains a user's answers is the one selected."""

import torch

from prefalign.rewards import context_aware as cap


def _pairs(n: int, seed: int):
    """Context +1 prefers the larger first feature, context -1 the smaller."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
    ctx = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0)
    better = ((a[:, :1] - b[:, :1]) * ctx > 0)
    return torch.where(better, a, b), torch.where(better, b, a), ctx


def test_a_stated_context_resolves_what_one_reward_cannot_and_is_selected_from_answers():
    w, lo, ctx = _pairs(2000, 0)
    model = cap.train_context_reward(w, lo, ctx, steps=600, lr=3e-3)
    plain = cap.train_context_reward(w, lo, ctx[:, :0], steps=600, lr=3e-3)
    tw, tl, tc = _pairs(400, 1)
    assert cap.pair_accuracy(model, tw, tl, tc) > 0.9
    assert cap.pair_accuracy(plain, tw, tl, tc[:, :0]) < 0.65  # the two contexts cancel out
    candidates = torch.tensor([[1.0], [-1.0]])
    for sign, index in ((1.0, 0), (-1.0, 1)):
        user = (tc[:, 0] == sign).nonzero().squeeze(-1)[:6]
        assert cap.select_context(model, tw[user], tl[user], candidates) == index
