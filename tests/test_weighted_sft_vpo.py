"""iw-SFT, PoFT and VPO against hand-computed values."""

import math

import pytest
import torch

from prefalign.config import LossTerm
from prefalign.losses import build_losses
from prefalign.losses.inputs import PairLogps


def sig(x):
    return 1 / (1 + math.exp(-x))


def run(name, inputs, **params):
    (loss,) = build_losses([LossTerm(name=name, **params)])
    out = loss(inputs)
    return out.loss, out.metrics


def pairs():
    # d_w = -2 - (-4) = 2 over 2 tokens (avg +1); d_w = -9 - (-6) = -3 over 3 tokens (avg -1); d_l = 0.5, -1
    return PairLogps(chosen=torch.tensor([-2.0, -9.0]), rejected=torch.tensor([-5.0, -8.0]),
                     chosen_tokens=torch.tensor([2.0, 3.0]), rejected_tokens=torch.tensor([4.0, 4.0]),
                     ref_chosen=torch.tensor([-4.0, -6.0]), ref_rejected=torch.tensor([-5.5, -7.0]))


def test_iw_sft_weights_by_the_clipped_likelihood_ratio():
    loss, metrics = run("iw_sft", pairs())
    w = [math.exp(1.0), math.exp(-1.0)]
    assert metrics["iw_sft/weight"].tolist() == pytest.approx(w, rel=1e-6)
    assert loss.tolist() == pytest.approx([w[0] * 2 / 2, w[1] * 9 / 3], rel=1e-6)
    loss, metrics = run("iw_sft", pairs(), temperature=2.0, max_weight=3.0)
    assert metrics["iw_sft/weight"].tolist() == pytest.approx([3.0, math.exp(-2.0)], rel=1e-6)


def test_iw_sft_weight_takes_no_gradient():
    p = pairs()
    p.chosen.requires_grad_(True)
    loss, _ = run("iw_sft", p)
    loss.sum().backward()
    # d/d logp of w * (-logp / n) with w constant: -w / n
    assert p.chosen.grad.tolist() == pytest.approx([-math.exp(1.0) / 2, -math.exp(-1.0) / 3], rel=1e-6)


def test_poft_prefers_the_target_over_the_aligned_model():
    loss, _ = run("poft", pairs(), beta=0.5)
    assert loss.tolist() == pytest.approx([-math.log(sig(0.5 * 1.0)), -math.log(sig(0.5 * -1.0))], rel=1e-6)
    loss, _ = run("poft", pairs(), length_normalize=False)
    assert loss.tolist() == pytest.approx([-math.log(sig(2.0)), -math.log(sig(-3.0))], rel=1e-6)
    # its gradient is SFT's scaled by b s(b (s_ref - s_theta)): larger where the aligned model likes the data more
    p = pairs()
    p.chosen.requires_grad_(True)
    run("poft", p, beta=0.5)[0].sum().backward()
    assert p.chosen.grad.tolist() == pytest.approx([-0.5 * sig(-0.5) / 2, -0.5 * sig(0.5) / 3], rel=1e-6)


def test_vpo_signs_and_calibration():
    a, b = 0.2, 0.5
    dpo = [-math.log(sig(b * (2 - 0.5))), -math.log(sig(b * (-3 + 1)))]
    loss, _ = run("vpo", pairs(), alpha=a, beta=b)
    assert loss.tolist() == pytest.approx([dpo[0] - a * b * 2, dpo[1] - a * b * -3], rel=1e-6)
    loss, _ = run("vpo", pairs(), alpha=a, beta=b, sign="optimistic", calibration="both")
    assert loss.tolist() == pytest.approx([dpo[0] + a * b * 1.25, dpo[1] + a * b * -2], rel=1e-6)
    loss, _ = run("vpo", pairs(), alpha=0.0, beta=b)
    assert loss.tolist() == pytest.approx(dpo, rel=1e-6)


def test_dft_by_hand_with_padding():
    from prefalign.losses.inputs import ListLogps
    lists = ListLogps(logps=torch.tensor([[-2.0, -3.0, -5.0], [-1.0, -4.0, -9.0]]),
                      n_tokens=torch.tensor([[2.0, 3.0, 5.0], [1.0, 2.0, 3.0]]),
                      valid=torch.tensor([[True, True, True], [True, True, False]]),
                      ref=torch.tensor([[-2.5, -2.0, -4.0], [-1.0, -3.0, -1.0]]))
    loss, metrics = run("dft", lists)
    first = 2.0 + math.log((math.exp(-3.0 + 2.0) + math.exp(-5.0 + 4.0)) / 2)
    second = 1.0 + math.log(math.exp(-4.0 + 3.0))  # the padded third response takes no part
    assert loss.tolist() == pytest.approx([first, second], rel=1e-6)
    loss, _ = run("dft", lists, temperature=2.0, length_normalize=True)
    first = 1.0 / 2 + math.log((math.exp(-1.0 / 2 + 2.0) + math.exp(-1.0 / 2 + 4.0)) / 2)
    assert loss[0].item() == pytest.approx(first, rel=1e-6)
    with pytest.raises(ValueError, match="at least one sampled negative"):
        run("dft", ListLogps(torch.tensor([[-1.0, 0.0]]), torch.ones(1, 2), torch.tensor([[True, False]]),
                             torch.zeros(1, 2)))
