"""SALSA's soup reference (the weight average of several models) and RTO's dense DPO reward: each against
values computed by hand or by a plain forward pass, and their refusals."""

import json

import pytest
import torch
from pydantic import ValidationError

from prefalign.config.schema import ReferenceConfig, RLTrainConfig, TrainConfig
from prefalign.rl.dense_reward import dpo_token_rewards


def save_tiny(path, seed, toy_tokenizer):
    from prefalign.toy.model import new_toy_model

    torch.manual_seed(seed)
    model = new_toy_model(toy_tokenizer, hidden=32, layers=2, heads=2, intermediate=64)
    model.save_pretrained(path)
    toy_tokenizer.save_pretrained(path)
    return model


@pytest.mark.parametrize("weights", [None, [0.25, 0.75]])
def test_the_soup_reference_is_the_weight_average_of_its_models(tmp_path, toy_tokenizer, weights):
    from prefalign.training.preference import frozen_reference

    a = save_tiny(tmp_path / "a", 1, toy_tokenizer)
    b = save_tiny(tmp_path / "b", 2, toy_tokenizer)
    cfg = TrainConfig.model_validate({"model": {"name_or_path": str(tmp_path / "a")},
                                      "reference": {"soup": [str(tmp_path / "a"), str(tmp_path / "b")],
                                                    "soup_weights": weights}})
    soup = frozen_reference(cfg, a).model
    wa, wb = weights or [0.5, 0.5]
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for name, p in soup.named_parameters():
        assert torch.allclose(p, wa * pa[name] + wb * pb[name], atol=1e-7), name
        assert not p.requires_grad
    assert not soup.training


@pytest.mark.parametrize("reference, message", [
    ({"soup": ["a"]}, "at least two models"),
    ({"soup": ["a", "b"], "name_or_path": "c"}, "keep one"),
    ({"soup": ["a", "b"], "kind": "adapter"}, "kind=adapter cannot use reference.soup"),
    ({"soup": ["a", "b"], "soup_weights": [1.0]}, "1 weights for 2 models"),
    ({"soup_weights": [0.5, 0.5]}, "needs reference.soup"),
])
def test_soup_settings_that_cannot_work_are_refused(reference, message):
    with pytest.raises(ValidationError, match=message):
        ReferenceConfig.model_validate(reference)


def test_the_rto_token_reward_by_hand():
    dpo = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    assert dpo_token_rewards(dpo, ref, 0.1)[0].tolist() == pytest.approx([0.05, -0.1, 0.0])


def completion_logps(model, prompt_ids, completion):
    ids = torch.tensor([prompt_ids + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def rto_rollout(out, model, advantage, placement):
    """One RL step with RTO's reward only: (the rollout's groups as checkpointed, the step's metrics)."""
    from prefalign.rl.recipe import train_rl

    cfg = RLTrainConfig.model_validate({
        "model": {"name_or_path": "toy"}, "loss": [{"name": "ppo_clip"}],
        "rl": {"prompts": "toy-arithmetic", "group_size": 4, "max_new_tokens": 8, "advantage": advantage,
               "rewards": [], "dpo_reward": {"model": str(model), "beta": 0.5, "placement": placement}},
        "trainer": {"output_dir": str(out), "max_steps": 1, "batch_size": 2, "lr": 1e-4, "save_every": 1,
                    "progress": False}})
    seen = []
    train_rl(cfg, on_step=lambda s, m: seen.append(m))
    state = json.loads((out / "checkpoints" / "step-00000001" / "state.json").read_text())
    return state["source"]["groups"], seen[0]


def expected_dense(groups, model):
    """beta (log pi_dpo - log pi_ref) of every sampled token, from a plain forward pass of each model."""
    from prefalign.models.loading import load_for_inference

    dpo, ref = load_for_inference(str(model)), load_for_inference("toy")
    return [[0.5 * (completion_logps(dpo, g["prompt_ids"], c) - completion_logps(ref, g["prompt_ids"], c))
             for c in g["completions"]] for g in groups]


def test_rto_rollouts_carry_the_dpo_models_token_log_ratio_into_the_advantages(tmp_path, tiny_model_dir):
    """With no outcome reward, Dr. GRPO's advantages are each sample's summed token rewards minus its
    group's mean sum."""
    groups, metrics = rto_rollout(tmp_path / "rto", tiny_model_dir, "dr_grpo", "token")
    sums = []
    for g, expected in zip(groups, expected_dense(groups, tiny_model_dir)):
        for dense, e in zip(g["dense_reward"], expected):
            assert dense == pytest.approx(e.tolist(), abs=1e-4)
        totals = [e.sum().item() for e in expected]
        for adv, total in zip(g["advantages"], totals):
            assert adv == pytest.approx([total - sum(totals) / 4] * len(adv), abs=1e-4)
        sums += totals
    assert metrics["rl/dense_reward"] == pytest.approx(sum(sums) / len(sums), abs=1e-4)


def test_rto_sequence_placement_puts_the_sum_on_the_last_token(tmp_path, tiny_model_dir):
    """REINFORCE++ (returns to go, gamma 1, then whitened over the batch): with the sum on the last token
    every token of a sample returns the same total, where per-token placement returns its suffix sums."""
    groups, _ = rto_rollout(tmp_path / "seq", tiny_model_dir, "reinforce_pp", "sequence")
    expected = [e for row in expected_dense(groups, tiny_model_dir) for e in row]
    returns = torch.cat([torch.full((len(e),), e.sum().item()) for e in expected])
    whitened = ((returns - returns.mean()) / (returns.std() + 1e-6)).tolist()
    advantages = [a for g in groups for row in g["advantages"] for a in row]
    assert advantages == pytest.approx(whitened, abs=1e-4)


def test_rto_refuses_dynamic_sampling(tmp_path):
    from prefalign.losses.registry import build_losses
    from prefalign.rl.recipe import check_rl_config

    cfg = RLTrainConfig.model_validate({"rl": {"dynamic_sampling": True, "dpo_reward": {"model": "toy"}},
                                        "trainer": {"output_dir": str(tmp_path / "x")}})
    with pytest.raises(ValueError, match="dynamic_sampling"):
        check_rl_config(cfg, build_losses(cfg.loss))
