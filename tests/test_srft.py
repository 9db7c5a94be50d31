"""SRFT: the loss against hand-computed values, demonstrations joined to their groups, the entropy its
weights read, and its refusals."""

import json
import math

import pytest
import torch

from prefalign.config.schema import RLTrainConfig
from prefalign.data.errors import DataError
from prefalign.losses.inputs import PolicyLogps
from prefalign.losses.policy_gradient import srft
from prefalign.rl.demonstrations import load_demonstrations


def test_srft_loss_by_hand():
    # rows: a demonstration, a positive sample, a negative sample; one token each, then a padded second token
    logps = torch.tensor([[math.log(0.5), 0.0], [-1.0, -2.0], [-0.5, 0.0]])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([[2.0, 0.0], [0.3, 0.3], [-0.7, 0.0]])
    x = PolicyLogps(logps, logps, adv, mask, rewards=torch.tensor([1.0, 1.0, 0.0]),
                    demo=torch.tensor([1.0, 0.0, 0.0]), entropy=0.4)
    loss, metrics = srft(x, sft_coef=0.5, rl_coef=0.1, eps=0.2, positive=0.0)
    w_sft, w_rl = 0.5 * math.exp(-0.4), 0.1 * math.exp(0.4)
    # demo: -w_sft log 0.5 - min(0.5 * 2, clip(0.5, 0.8, 1.2) * 2) = w_sft log 2 - 1.0
    assert loss[0, 0].item() == pytest.approx(w_sft * math.log(2) - 1.0)
    assert loss[1].tolist() == pytest.approx([w_rl * 1.0, w_rl * 2.0])  # -w_rl log pi(y+)
    assert loss[2, 0].item() == pytest.approx(-0.5)  # + log pi(y-)
    assert metrics["rl/srft_w_sft"][0].item() == pytest.approx(w_sft)
    # a negative advantage on the demonstration: min picks the clipped 0.8 A
    x.advantages = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    loss, _ = srft(x, sft_coef=0.0, rl_coef=0.1, eps=0.2, positive=0.0)
    assert loss[0, 0].item() == pytest.approx(0.8)


def test_toy_demonstrations_are_the_ideal_answer_and_files_must_cover_every_prompt(tmp_path):
    assert load_demonstrations("toy", ["what is 7 plus 5 ?"])["what is 7 plus 5 ?"].split()[-2] == "12"
    path = tmp_path / "demos.jsonl"
    path.write_text(json.dumps({"prompt": "a", "completion": " b"}) + "\n")
    assert load_demonstrations(str(path), ["a"]) == {"a": " b"}
    with pytest.raises(DataError, match="no demonstration for 1 of the run's prompts"):
        load_demonstrations(str(path), ["a", "c"])
    path.write_text(json.dumps({"prompt": "a", "completion": 3}) + "\n")
    with pytest.raises(DataError, match="completion"):
        load_demonstrations(str(path), ["a"])


def srft_config(out, **rl):
    return RLTrainConfig.model_validate({
        "model": {"name_or_path": "toy"}, "loss": [{"name": "srft"}],
        "rl": {"prompts": "toy-arithmetic", "group_size": 3, "max_new_tokens": 8, "demonstrations": "toy", **rl},
        "trainer": {"output_dir": str(out), "max_steps": 1, "batch_size": 2, "lr": 1e-4, "save_every": 1,
                    "progress": False}})


def test_each_group_holds_its_samples_then_its_demonstration_and_the_entropy_is_the_samplers(tmp_path):
    from prefalign.models.loading import load_for_inference
    from prefalign.online.rollouts import read_rollouts
    from prefalign.rl.recipe import train_rl
    from prefalign.toy.tokenizer import build_toy_tokenizer

    seen = []
    run = train_rl(srft_config(tmp_path / "s"), on_step=lambda s, m: seen.append(m))
    groups = json.loads((tmp_path / "s" / "checkpoints" / "step-00000001" / "state.json").read_text())["source"]["groups"]
    tok, base = build_toy_tokenizer(), load_for_inference("toy")
    entropies = []
    for g in groups:
        assert g["demos"] == [False, False, False, True] and len(g["completions"]) == 4
        prompt = tok.decode(g["prompt_ids"], skip_special_tokens=True)
        answer = load_demonstrations("toy", [prompt])[prompt]
        assert tok.decode(g["completions"][3], skip_special_tokens=True).split() == answer.split()
        assert g["rewards"][3] == 1.0  # the verifier accepts the ideal answer
        for c in g["completions"][:3]:
            ids = torch.tensor([g["prompt_ids"] + c])
            with torch.no_grad():
                logp = base(ids).logits[0, len(g["prompt_ids"]) - 1:-1].float().log_softmax(-1)
            entropies += (-(logp.exp() * logp).sum(-1)).tolist()
    assert seen[0]["rl/entropy"] == pytest.approx(sum(entropies) / len(entropies), abs=1e-4)
    assert seen[0]["rl/srft_w_sft"] == pytest.approx(0.5 * math.exp(-seen[0]["rl/entropy"]), rel=1e-5)
    assert seen[0]["rl/demo_reward"] == 1.0
    rows = read_rollouts(run.run_dir / "rollouts.jsonl")
    assert all(r["demonstrations"] == [False, False, False, True] for r in rows)


def test_srft_and_demonstrations_go_together(tmp_path):
    from prefalign.losses.registry import build_losses
    from prefalign.rl.recipe import check_rl_config

    cfg = srft_config(tmp_path / "a", demonstrations=None)
    with pytest.raises(ValueError, match="go together"):
        check_rl_config(cfg, build_losses(cfg.loss))
    cfg = srft_config(tmp_path / "b")
    cfg.loss[0].name = "ppo_clip"
    with pytest.raises(ValueError, match="go together"):
        check_rl_config(cfg, build_losses(cfg.loss))
