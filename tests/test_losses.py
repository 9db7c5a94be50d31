"""Each loss against values computed by hand from its paper's formula."""

import math

import pytest
import torch

from prefalign.config import LossTerm
from prefalign.losses import LOSSES, PairLogps, build_losses
from prefalign.losses.registry import ensure_registered

ensure_registered()


def sig(x):
    return 1 / (1 + math.exp(-x))


@pytest.fixture
def logps():
    # d_w = -1.0 - (-2.0) = 1.0 ; d_l = -3.0 - (-2.5) = -0.5 ; h = 1.5
    return PairLogps(chosen=torch.tensor([-1.0]), rejected=torch.tensor([-3.0]),
                     chosen_tokens=torch.tensor([2.0]), rejected_tokens=torch.tensor([5.0]),
                     ref_chosen=torch.tensor([-2.0]), ref_rejected=torch.tensor([-2.5]))


def run(name, logps, **params):
    (loss,) = build_losses([LossTerm(name=name, **params)])
    return loss(logps).loss.item()


def test_dpo(logps):
    assert run("dpo", logps, beta=0.1) == pytest.approx(-math.log(sig(0.15)), rel=1e-6)


def test_conservative_dpo(logps):
    e, bh = 0.2, 0.5 * 1.5
    expected = -(1 - e) * math.log(sig(bh)) - e * math.log(sig(-bh))
    assert run("dpo", logps, beta=0.5, label_smoothing=e) == pytest.approx(expected, rel=1e-6)


def test_robust_dpo(logps):
    e, bh = 0.2, 0.5 * 1.5
    expected = (-(1 - e) * math.log(sig(bh)) + e * math.log(sig(-bh))) / (1 - 2 * e)
    assert run("robust_dpo", logps, beta=0.5, label_smoothing=e) == pytest.approx(expected, rel=1e-6)


def test_robust_dpo_is_unbiased_under_flips():
    # E over a label flip with rate e of the robust loss equals the clean DPO loss (Chowdhury et al., Lemma 3.1).
    e, beta = 0.2, 0.5
    h = torch.tensor([0.7])
    clean = PairLogps(torch.tensor([0.7]), torch.tensor([0.0]), torch.ones(1), torch.ones(1), torch.zeros(1), torch.zeros(1))
    flipped = PairLogps(torch.tensor([0.0]), torch.tensor([0.7]), torch.ones(1), torch.ones(1), torch.zeros(1), torch.zeros(1))
    f = LOSSES["robust_dpo"].fn
    expected = (1 - e) * f(clean, beta, e) + e * f(flipped, beta, e)
    assert expected.item() == pytest.approx(-torch.nn.functional.logsigmoid(beta * h).item(), rel=1e-5)


def test_ipo_summed_and_length_normalised(logps):
    beta = 0.25
    assert run("ipo", logps, beta=beta) == pytest.approx((1.5 - 1 / (2 * beta)) ** 2, rel=1e-6)
    h_avg = 1.0 / 2 - (-0.5) / 5
    assert run("ipo", logps, beta=beta, length_normalize=True) == pytest.approx((h_avg - 2.0) ** 2, rel=1e-6)


def test_hinge(logps):
    assert run("hinge", logps, beta=0.5) == pytest.approx(1 - 0.75, rel=1e-6)
    assert run("hinge", logps, beta=1.0) == 0.0


def test_sft(logps):
    assert run("sft", logps) == pytest.approx(1.0 / 2)
    assert run("sft", logps, nll_normalize="sum") == pytest.approx(1.0)


def test_weighted_sum_of_terms(logps):
    terms = build_losses([LossTerm(name="dpo", beta=0.1), LossTerm(name="sft", weight=0.2)])
    total = sum(t(logps).loss for t in terms).item()
    assert total == pytest.approx(-math.log(sig(0.15)) + 0.2 * 0.5, rel=1e-6)


def test_reference_losses_require_reference():
    no_ref = PairLogps(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.ones(1))
    with pytest.raises(ValueError, match="reference"):
        LOSSES["dpo"].fn(no_ref, 0.1, 0.0)


def test_every_loss_documents_its_paper():
    for spec in LOSSES.values():
        assert len(spec.doc) > 40, spec.name


def test_dpo_gradient_pushes_chosen_up(logps):
    chosen = logps.chosen.clone().requires_grad_(True)
    lp = PairLogps(chosen, logps.rejected, logps.chosen_tokens, logps.rejected_tokens, logps.ref_chosen, logps.ref_rejected)
    LOSSES["dpo"].fn(lp, 0.1, 0.0).sum().backward()
    # d/d logp_w of -log s(b h) = -b (1 - s(b h))
    assert chosen.grad.item() == pytest.approx(-0.1 * (1 - sig(0.15)), rel=1e-6)
