"""Online Merging Optimizers (Lu et al. 2024): OnDARE and OnTIES against hand-computed updates, and in the
training loop (exact resume, the base's task vector, refusals)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefalign.config import LoraSettings, ModelConfig
from prefalign.config.loading import ConfigError
from prefalign.config.schema import OnlineMergingConfig
from prefalign.training.online_merging import TAU, OnlineMergingAdamW, dare, ties_merge, top_magnitude
from prefalign.training.preference import train_preference

from .test_training import _weights, assert_resume_is_exact, make_config


def optimizer(p, base, **merging):
    cfg = OnlineMergingConfig(base="unused", **merging)
    return OnlineMergingAdamW([("w", p)], cfg, seed=0, base_params=lambda: {"w": base}, lr=0.1, weight_decay=0.0)


def test_ties_merge_by_hand():
    tau, delta = torch.tensor([1.0, -2.0, 0.5, 0.0]), torch.tensor([-3.0, -1.0, 0.2, 1.0])
    # tau + delta = [-2, -3, 0.7, 1]: elected signs [-, -, +, +]; tau's 1 and 0 disagree, delta agrees throughout
    expected = 0.5 * torch.tensor([0.0, -2.0, 0.5, 0.0]) + 0.5 * delta
    torch.testing.assert_close(ties_merge(tau, delta, 0.5), expected)


def test_sparsifiers():
    torch.testing.assert_close(top_magnitude(torch.tensor([1.0, -4.0, 2.0, -3.0]), 0.5),
                               torch.tensor([0.0, -4.0, 0.0, -3.0]))
    x = torch.ones(100_000)
    kept = dare(x, 0.1, torch.Generator().manual_seed(1))
    assert set(kept.unique().tolist()) == {0.0, 10.0}  # kept entries over keep
    assert (kept > 0).float().mean().item() == pytest.approx(0.1, abs=0.005)
    assert torch.equal(kept, dare(x, 0.1, torch.Generator().manual_seed(1)))


def test_ondare_step_by_hand():
    # Adam's first step is -lr g / (|g| + eps) = -lr sign(g); tau = start - base; keep 1 keeps everything.
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    base = torch.tensor([0.5, 2.5, 3.0])
    opt = optimizer(p, base, alpha=0.25, keep=1.0)
    p.grad = torch.tensor([2.0, -1.0, 0.5])
    opt.step()
    adam = -0.1 * torch.tensor([1.0, -1.0, 1.0])
    tau = torch.tensor([0.5, -0.5, 0.0])
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, 2.0, 3.0]) + 0.25 * tau + 0.75 * adam, atol=1e-6, rtol=0)
    torch.testing.assert_close(opt.state[p][TAU], tau)


def test_ondare_tau_is_clipped_and_ties_tau_trimmed():
    for method, expected in (("dare", [1.0, 0.1, -0.2, 0.0]), ("ties", [5.0, 0.0, -0.2, 0.0])):
        p = torch.nn.Parameter(torch.tensor([5.0, 0.1, -0.2, 0.0]))
        opt = optimizer(p, torch.zeros(4), method=method, keep=1.0 if method == "dare" else 0.5, clip=1.0)
        p.grad = torch.ones(4)
        opt.step()
        assert opt.state[p][TAU].tolist() == pytest.approx(expected)


def test_alpha_0_and_keep_1_is_plain_adamw():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = torch.nn.Parameter(a.detach().clone())
    merged = optimizer(a, torch.zeros(5, 3), alpha=0.0, keep=1.0)
    plain = torch.optim.AdamW([b], lr=0.1, weight_decay=0.0)
    for _ in range(3):
        g = torch.randn(5, 3)
        a.grad, b.grad = g.clone(), g.clone()
        merged.step()
        plain.step()
    torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=0)


@pytest.fixture
def shifted_base(tiny_model_dir, tmp_path):
    """A stand-in for the model the tiny model was fine-tuned from: its weights shifted, so tau is not 0."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "base")
    return tmp_path / "base"


@pytest.mark.parametrize("method", ["dare", "ties"])
def test_in_training_it_moves_along_tau_and_resumes_exactly(tiny_model_dir, pairs_file, tmp_path, shifted_base,
                                                           method):
    merging = {"base": str(shifted_base), "method": method, "alpha": 0.05, "keep": 0.3}

    def config(out, **trainer):
        return make_config(tiny_model_dir, pairs_file, out, save_every=3, online_merging=merging, **trainer)

    straight = train_preference(config(tmp_path / "straight"))
    assert_resume_is_exact(config, tmp_path, straight)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    base = AutoModelForCausalLM.from_pretrained(shifted_base).state_dict()
    trained = _weights(straight.run_dir)
    moved = torch.cat([(trained[k] - start[k]).flatten() for k in trained])
    tau = torch.cat([(start[k] - base[k]).flatten() for k in trained])
    # 6 steps of alpha tau (sparsified, mean-preserving) add about 0.3 tau: the update leans along tau
    assert torch.nn.functional.cosine_similarity(moved, tau, dim=0) > 0.3


def test_refused_with_lora_and_without_a_base(tiny_model_dir, pairs_file, tmp_path, shifted_base):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "lora", online_merging={"base": str(shifted_base)})
    with pytest.raises(ValueError, match="model.lora trains an adapter"):
        type(cfg).model_validate(cfg.model_dump() | {"model": {"name_or_path": "toy", "lora": {"r": 4}}})
    # past the config (a reward model's body is not the causal LM's): refused at the first update
    cfg = cfg.model_copy(update={"model": ModelConfig(name_or_path=str(tiny_model_dir), lora=LoraSettings(r=4))})
    with pytest.raises(ConfigError, match="full fine-tuning"):
        train_preference(cfg)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        train_preference(make_config(tiny_model_dir, pairs_file, tmp_path / "nobase",
                                     online_merging={"base": str(tmp_path / "missing")}))


def test_a_step_at_learning_rate_0_changes_nothing():
    # torch.distributed.checkpoint makes the state it loads into with one such step, on the resumed weights
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = optimizer(p, torch.zeros(2), alpha=0.5, keep=1.0)
    opt.param_groups[0]["lr"] = 0.0
    p.grad = torch.ones(2)
    opt.step()
    assert p.tolist() == [1.0, 2.0] and TAU not in opt.state[p]
