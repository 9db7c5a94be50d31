"""GRAO: the loss against its formula written out group by group, its refusals, and a toy run."""

import pytest
import torch

from prefalign.losses.inputs import PolicyLogps
from prefalign.losses.policy_gradient import grao
from prefalign.rl.objective import aggregate


def paper_objective(seq_logps, adv, groups, size, beta, lam):
    """Eq. 3 of Wang et al. 2025 literally: (1/G) sum_i [A_i J(o_i) + beta A_y J(y) + lam A_i (J(o_i) - J(y))],
    averaged over groups; the demonstration is each group's last member."""
    total = 0.0
    for b in range(groups):
        j = seq_logps[b * size:(b + 1) * size]
        a = adv[b * size:(b + 1) * size]
        g = size - 1
        total += sum(a[i] * j[i] + beta * a[-1] * j[-1] + lam * a[i] * (j[i] - j[-1]) for i in range(g)) / g
    return total / groups


def test_grao_loss_is_the_papers_objective():
    torch.manual_seed(0)
    groups, size, width = 2, 4, 5  # G = 3 samples and a demonstration per group
    n = groups * size
    lengths = torch.tensor([5, 3, 4, 2, 1, 5, 2, 3])
    mask = (torch.arange(width)[None] < lengths[:, None]).float()
    logps = (-torch.rand(n, width) * mask).requires_grad_()
    adv_seq = torch.tensor([0.5, -1.0, 0.2, 1.5, -0.3, -0.3, 0.9, 0.4])
    demo = torch.tensor([0.0, 0, 0, 1] * groups)
    x = PolicyLogps(logps, logps.detach(), adv_seq[:, None] * mask, mask, demo=demo)
    per_token, metrics = grao(x, beta=0.5, lam=0.6)
    loss = aggregate(per_token, mask, "sequence_mean", 0) / n  # the loop divides by the step's N sequences
    j = (logps * mask).sum(-1) / lengths
    expected = -paper_objective(j, adv_seq.tolist(), groups, size, beta=0.5, lam=0.6)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # the gradient is that of -J too: the coefficients are constants
    (g_loss,) = torch.autograd.grad(loss, logps)
    (g_ref,) = torch.autograd.grad(expected, logps)
    assert torch.allclose(g_loss, g_ref, atol=1e-7)
    assert metrics["rl/grao_demo_advantage"].mean().item() == pytest.approx((1.5 + 0.4) / 2)


def test_grao_by_hand_for_one_group():
    # G = 1: one sample (A = -1, J = -2) and a demonstration (A = 1, J = -1), one token each
    logps = torch.tensor([[-2.0], [-1.0]])
    mask = torch.ones(2, 1)
    x = PolicyLogps(logps, logps, torch.tensor([[-1.0], [1.0]]), mask, demo=torch.tensor([0.0, 1.0]))
    per_token, _ = grao(x, beta=0.5, lam=0.6)
    # J = A J(o) + beta A_y J(y) + lam A (J(o) - J(y)) = 2 - 0.5 + 0.6 * -1 * -1 = 2.1; mean over 2 rows of -J
    assert aggregate(per_token, mask, "sequence_mean", 0).item() / 2 == pytest.approx(-2.1)


def test_grao_refuses_rows_without_whole_groups():
    logps = torch.zeros(3, 1)
    mask = torch.ones(3, 1)
    with pytest.raises(ValueError, match="rl.demonstrations"):
        grao(PolicyLogps(logps, logps, logps, mask), beta=0.5, lam=0.6)
    with pytest.raises(ValueError, match="each ending with its demonstration"):
        grao(PolicyLogps(logps, logps, logps, mask, demo=torch.tensor([1.0, 0.0, 0.0])), beta=0.5, lam=0.6)


def test_grao_runs_on_the_toy_task_and_needs_demonstrations(tmp_path):
    from prefalign.config.schema import RLTrainConfig
    from prefalign.losses.registry import build_losses
    from prefalign.rl.recipe import check_rl_config, train_rl

    def config(out, **rl):
        return RLTrainConfig.model_validate({
            "model": {"name_or_path": "toy"}, "loss": [{"name": "grao"}],
            "rl": {"prompts": "toy-arithmetic", "group_size": 3, "max_new_tokens": 8, "demonstrations": "toy",
                   "aggregation": "sequence_mean", **rl},
            "trainer": {"output_dir": str(out), "max_steps": 2, "batch_size": 2, "lr": 1e-4, "save_every": 2,
                        "progress": False}})

    seen = []
    train_rl(config(tmp_path / "g"), on_step=lambda s, m: seen.append(m))
    assert len(seen) == 2 and all(torch.isfinite(torch.tensor(m["loss"])) for m in seen)
    assert seen[0]["rl/demo_reward"] == 1.0
    cfg = config(tmp_path / "n", demonstrations=None)
    with pytest.raises(ValueError, match="go together"):
        check_rl_config(cfg, build_losses(cfg.loss))
