"""The wider loss family against values computed by hand from each paper's formula, limiting cases, and
gradients where a loss stops them on purpose."""

import math

import pytest
import torch

from prefalign.config import LossTerm
from prefalign.losses import LOSSES, PairLogps, build_losses
from prefalign.losses.registry import ensure_registered

ensure_registered()  # so that the parametrised tests below see every loss


def sig(x):
    return 1 / (1 + math.exp(-x))


def logsig(x):
    return math.log(sig(x))


def softplus(x):
    return math.log1p(math.exp(x))


def pair(**extra):
    # d_w = -1 - (-2) = 1.0 ; d_l = -3 - (-2.5) = -0.5 ; h = 1.5 ; |y_w| = 2 ; |y_l| = 5
    base = dict(chosen=torch.tensor([-1.0]), rejected=torch.tensor([-3.0]), chosen_tokens=torch.tensor([2.0]),
                rejected_tokens=torch.tensor([5.0]), ref_chosen=torch.tensor([-2.0]), ref_rejected=torch.tensor([-2.5]))
    return PairLogps(**(base | extra))


class TinyPolicy(torch.nn.Linear):
    """Stands in for a policy where a loss builds its own module from the policy's config."""

    def __init__(self, hidden=8, layers=2):
        super().__init__(1, 1)
        self.config = type("Config", (), {"hidden_size": hidden, "num_hidden_layers": layers})()


def run(name, logps=None, **params):
    (loss,) = build_losses([LossTerm(name=name, **params)])
    loss.build_module(TinyPolicy())
    return loss(logps or pair()).loss


def val(name, logps=None, **params):
    return run(name, logps, **params).item()


def test_exo():
    z, e = 0.1 * 1.5, 1e-3
    p = sig(z)
    assert val("exo", beta=0.1) == pytest.approx(p * (math.log(p) - math.log(1 - e)) + (1 - p) * (math.log(1 - p) - math.log(e)), rel=1e-5)


def test_sppo_hard():
    assert val("sppo_hard", beta=0.5) == pytest.approx((1.0 - 1.0) ** 2 + (-0.5 + 1.0) ** 2)


def test_rdpo_and_alpha_zero_is_dpo():
    assert val("rdpo", beta=0.1, alpha=0.2) == pytest.approx(-logsig(0.15 + 0.2 * 3), rel=1e-6)
    assert val("rdpo", beta=0.1, alpha=0.0) == pytest.approx(val("dpo", beta=0.1), rel=1e-6)


def test_ln_dpo():
    assert val("ln_dpo", beta=1.0) == pytest.approx(-logsig(1.0 / 2 - (-0.5) / 5), rel=1e-6)


def token_pair():
    """Token-level values consistent with pair(): sums -1, -3 (policy) and -2, -2.5 (reference)."""
    def row(values, width=6):
        t = torch.zeros(1, width)
        t[0, 1:1 + len(values)] = torch.tensor(values)  # position 0 stands for the prompt
        return t
    mask_w, mask_l = row([1, 1]), row([1, 1, 1, 1, 1])
    return pair(chosen_token_logps=row([-0.5, -0.5]), rejected_token_logps=row([-1, -1, -0.5, -0.25, -0.25]),
                chosen_mask=mask_w, rejected_mask=mask_l, ref_chosen_token_logps=row([-1, -1]),
                ref_rejected_token_logps=row([-0.5] * 5))


def test_ld_dpo_by_hand_and_alpha_one_is_dpo():
    # public length 2: policy_l = -2 + 0.5 * -1 = -2.5 ; ref_l = -1 + 0.5 * -1.5 = -1.75 ; h' = 1 + 0.75
    assert val("ld_dpo", token_pair(), beta=0.1, alpha=0.5) == pytest.approx(-logsig(0.1 * 1.75), rel=1e-6)
    assert val("ld_dpo", token_pair(), beta=0.1, alpha=1.0) == pytest.approx(val("dpo", beta=0.1), rel=1e-6)


@pytest.mark.parametrize("divergence, logits", [
    ("reverse_kl", 1.5),
    ("forward_kl", math.exp(0.5) - math.exp(-1.0)),
    ("js", 1.5 - (softplus(1.0) - softplus(-0.5))),
    ("alpha", (math.exp(0.25) - math.exp(-0.5)) / 0.5),
])
def test_f_dpo(divergence, logits):
    assert val("f_dpo", beta=0.1, divergence=divergence, alpha=0.5) == pytest.approx(-logsig(0.1 * logits), rel=1e-6)


def test_f_dpo_limits():
    assert val("f_dpo", beta=0.1) == pytest.approx(val("dpo", beta=0.1), rel=1e-6)
    near_forward = val("f_dpo", beta=0.1, divergence="alpha", alpha=0.999)
    assert near_forward == pytest.approx(val("f_dpo", beta=0.1, divergence="forward_kl"), rel=1e-3)


def test_apo():
    assert val("apo_zero", beta=1.0) == pytest.approx((1 - sig(1.0)) + sig(-0.5), rel=1e-6)
    assert val("apo_down", beta=1.0) == pytest.approx(sig(1.0) + (1 - sig(1.5)), rel=1e-6)


def test_nca():
    assert val("nca", beta=1.0) == pytest.approx(-logsig(1.0) - 0.5 * logsig(-1.0) - 0.5 * logsig(0.5), rel=1e-6)


def test_bco_running_baseline():
    (term,) = build_losses([LossTerm(name="bco", beta=1.0)])
    first = term(pair()).loss.item()  # baseline = mean(1.0, -0.5) = 0.25
    assert first == pytest.approx(-logsig(1.0 - 0.25) - logsig(-(-0.5 - 0.25)), rel=1e-6)
    assert term.state == {"mean": 0.25, "count": 2.0}
    term(pair(ref_chosen=torch.tensor([-1.5])), update=True)  # rewards 0.5, -0.5 -> running mean of 4 = 0.125
    assert term.state["mean"] == pytest.approx(0.125)
    term(pair(), update=False)
    assert term.state["mean"] == pytest.approx(0.125)


def test_discopop():
    z = 1.5
    m = sig(z / 0.05)
    assert val("discopop", beta=1.0, tau=0.05) == pytest.approx((1 - m) * -logsig(z) + m * math.exp(-z), rel=1e-6)


def test_aot_sorts_across_the_batch():
    lp = PairLogps(chosen=torch.tensor([-1.0, -4.0, -2.0]), rejected=torch.tensor([-3.0, -3.5, -2.5]),
                   chosen_tokens=torch.ones(3), rejected_tokens=torch.ones(3),
                   ref_chosen=torch.tensor([-2.0, -2.0, -2.0]), ref_rejected=torch.tensor([-2.0, -3.0, -1.0]))
    policy = sorted([2.0, -0.5, 0.5])
    reference = sorted([0.0, 1.0, -1.0])
    expected = [-logsig(0.5 * (p - r)) for p, r in zip(policy, reference)]
    assert run("aot", lp, beta=0.5).tolist() == pytest.approx(expected, rel=1e-6)
    d_w, d_l = sorted([1.0, -2.0, 0.0]), sorted([-1.0, -0.5, -1.5])
    expected = [-logsig(0.5 * (w - lo)) for w, lo in zip(d_w, d_l)]
    assert run("aot", lp, beta=0.5, paired=False).tolist() == pytest.approx(expected, rel=1e-6)


def test_simpo_and_its_dpo_limit():
    # avg_w = -0.5, avg_l = -0.6
    assert val("simpo", beta=2.0, gamma=1.0) == pytest.approx(-logsig(2.0 * 0.1 - 1.0), rel=1e-5)
    no_ref = pair(ref_chosen=torch.zeros(1), ref_rejected=torch.zeros(1))
    assert val("simpo", beta=0.1, gamma=0.0, length_normalize=False) == pytest.approx(val("dpo", no_ref, beta=0.1), rel=1e-6)


def test_cpo():
    assert val("cpo", beta=0.1, alpha=1.0) == pytest.approx(-logsig(0.1 * 2.0) + 0.5, rel=1e-6)


def log_odds(avg):
    return avg - math.log(1 - math.exp(avg))


def test_orpo():
    ratio = log_odds(-0.5) - log_odds(-0.6)
    assert val("orpo", lam=0.1) == pytest.approx(0.5 - 0.1 * logsig(ratio), rel=1e-5)


def test_repo():
    assert val("repo", gamma=0.5) == pytest.approx(0.4, rel=1e-5)
    assert val("repo", gamma=0.05) == 0.0


def test_asft():
    expected = 0.5 - 1.0 * (logsig(2.0 * log_odds(-0.5)) + logsig(-2.0 * log_odds(-0.6)))
    assert val("asft", beta=2.0, lam=1.0) == pytest.approx(expected, rel=1e-5)


def test_beta_dpo_dynamic_beta_without_filtering():
    lp = PairLogps(chosen=torch.tensor([0.5, 0.0]), rejected=torch.tensor([-1.0, -0.5]), chosen_tokens=torch.ones(2),
                   rejected_tokens=torch.ones(2), ref_chosen=torch.zeros(2), ref_rejected=torch.zeros(2))
    (term,) = build_losses([LossTerm(name="beta_dpo", beta=0.1, alpha=0.5, filter_ratio=0.0)])
    out = term(lp)  # gaps 1.5, 0.5: M0 = 0.1 * 1.0, sigma = 0.1 * 0.5
    assert term.state["gap_mean"] == pytest.approx(0.1) and term.state["gap_std"] == pytest.approx(0.05)
    beta_batch = 0.1 * (1 + 0.5 * (1.0 - 0.1))
    assert out.metrics["beta_dpo/beta"].item() == pytest.approx(beta_batch, rel=1e-6)
    assert out.loss.tolist() == pytest.approx([-logsig(beta_batch * 1.5), -logsig(beta_batch * 0.5)], rel=1e-6)


def test_beta_dpo_filters_outliers():
    lp = PairLogps(chosen=torch.tensor([0.0, 10.0, 0.1, -0.1]), rejected=torch.zeros(4), chosen_tokens=torch.ones(4),
                   rejected_tokens=torch.ones(4), ref_chosen=torch.zeros(4), ref_rejected=torch.zeros(4))
    (term,) = build_losses([LossTerm(name="beta_dpo", beta=0.1, filter_ratio=0.25)])
    term.state.update(gap_mean=0.0, gap_std=1.0)
    out = term(lp, update=False)
    assert out.metrics["beta_dpo/kept"].tolist() == [1.0, 0.0, 1.0, 1.0]  # the gap-10 outlier is dropped
    assert out.loss[1].item() == 0.0


def test_margin_weighted_dpo():
    lp = pair(extras={"margin": torch.tensor([2.0]), "score_chosen": torch.tensor([1.0]), "score_rejected": torch.tensor([1.5])})
    assert val("margin_weighted_dpo", lp, beta=0.1, column="margin") == pytest.approx(2 * sig(-2.0) * -logsig(0.15), rel=1e-6)
    assert val("margin_weighted_dpo", lp, beta=0.1) == pytest.approx(2 * sig(0.5) * -logsig(0.15), rel=1e-6)
    with pytest.raises(ValueError, match="column 'margin'"):
        val("margin_weighted_dpo", pair(), column="margin")


def test_wpo_weight_and_no_gradient_through_it():
    wc = torch.tensor([-0.3], requires_grad=True)
    lp = pair(wpo_chosen=wc, wpo_rejected=torch.tensor([-0.2]))
    loss = run("wpo", lp, beta=0.1)
    assert loss.item() == pytest.approx(math.exp(-0.5) * -logsig(0.15), rel=1e-6)
    assert not loss.requires_grad
    assert val("wpo", pair(wpo_chosen=torch.tensor([0.4]), wpo_rejected=torch.tensor([0.0])), beta=0.1) == pytest.approx(-logsig(0.15), rel=1e-6)


def test_robust_dpo_with_no_noise_is_dpo():
    assert val("robust_dpo", beta=0.1, label_smoothing=0.0) == pytest.approx(val("dpo", beta=0.1), rel=1e-6)


@pytest.mark.parametrize("name", sorted(n for n, spec in LOSSES.items() if spec.kind == "pairwise"))
def test_every_pairwise_loss_is_finite_and_differentiable(name):
    torch.manual_seed(0)
    b, t = 4, 7
    chosen = torch.randn(b, requires_grad=True)
    mask = torch.zeros(b, t)
    mask[:, 2:] = 1
    tokens = torch.randn(b, t) * mask
    lp = PairLogps(chosen=chosen - 5, rejected=torch.randn(b) - 6, chosen_tokens=torch.full((b,), 5.0),
                   rejected_tokens=torch.full((b,), 5.0), ref_chosen=torch.randn(b) - 5, ref_rejected=torch.randn(b) - 6,
                   chosen_token_logps=tokens, rejected_token_logps=tokens, chosen_mask=mask, rejected_mask=mask,
                   ref_chosen_token_logps=tokens, ref_rejected_token_logps=tokens, wpo_chosen=torch.full((b,), -0.1),
                   wpo_rejected=torch.full((b,), -0.1), chosen_token_kl=tokens.abs(), rejected_token_kl=tokens.abs() / 2,
                   ref_chosen_hidden=torch.randn(2, b, t, 8), ref_rejected_hidden=torch.randn(2, b, t, 8),
                   extras={"score_chosen": torch.ones(b), "score_rejected": torch.zeros(b)})
    out = run(name, lp)
    assert out.shape == (b,) and torch.isfinite(out).all()
    if name not in ("ld_dpo", "sparsepo"):  # these read the token-level values, not the sums
        out.sum().backward()
        assert chosen.grad is not None and torch.isfinite(chosen.grad).all()


def test_every_loss_names_its_paper():
    for spec in LOSSES.values():
        assert len(spec.doc) > 60 and any(ch.isdigit() for ch in spec.doc), spec.name
