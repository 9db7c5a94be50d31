"""RL: advantage estimators, KL estimators and controller, policy losses against hand-computed values, the
micro-batching invariance of every aggregation mode, group packing, the rollout source, exact resume after a
real SIGKILL, and toy runs that raise the verifier's reward."""

import math

import pytest
import torch

from prefalign.config.schema import RLConfig, RLTrainConfig
from prefalign.losses.inputs import PolicyLogps
from prefalign.losses.policy_gradient import cispo, gspo, policy_gradient, ppo_clip, value_loss
from prefalign.rl.advantages import ADVANTAGES, AdvantageInputs, returns_to_go, whiten
from prefalign.rl.batch import RolloutGroup, collate_groups
from prefalign.rl.kl import adapt_kl_coef, kl_estimate
from prefalign.training.metrics import read_metrics
from tests.kill_helpers import run_until_killed


def inputs(rewards, lengths=None, token_rewards=None, values=None, gamma=1.0, lam=0.95):
    rewards = torch.tensor(rewards, dtype=torch.float32)
    n = rewards.numel()
    lengths = lengths or [1] * n
    mask = torch.zeros(n, max(lengths))
    for i, k in enumerate(lengths):
        mask[i, :k] = 1
    tr = torch.zeros_like(mask) if token_rewards is None else torch.tensor(token_rewards)
    return AdvantageInputs(rewards, tr, mask, None if values is None else torch.tensor(values), gamma, lam)


# -- advantage estimators ----------------------------------------------------------------------------------


def test_group_estimators_by_hand():
    x = inputs([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 5.0]], lengths=[2, 1, 3, 1, 1, 1, 1, 2])
    std0 = math.sqrt(4 * 0.25 / 3)  # unbiased std of (1, 0, 0, 1)
    a = ADVANTAGES["grpo"](x).advantages
    assert a[0, :2].tolist() == pytest.approx([0.5 / (std0 + 1e-6)] * 2)
    assert a[0, 2] == 0 and a[1, 0] == pytest.approx(-0.5 / (std0 + 1e-6))
    std1 = math.sqrt((3 * 0.75 ** 2 + 2.25 ** 2) / 3)
    assert a[7, 1] == pytest.approx(2.25 / (std1 + 1e-6))
    assert ADVANTAGES["dr_grpo"](x).advantages[:4, 0].tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])
    # RLOO: R_i minus the mean of the other three.
    assert ADVANTAGES["rloo"](x).advantages[4:, 0].tolist() == pytest.approx([-1.0, -1.0, -1.0, 3.0])
    assert ADVANTAGES["rloo"](x).advantages[:4, 0].tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])


def test_outcome_estimators_add_the_per_token_kl_terms_to_the_reward():
    x = inputs([[1.0, 0.0]], lengths=[2, 2], token_rewards=[[-0.1, -0.2], [0.0, -0.3]])
    # R = (1 - 0.3, 0 - 0.3): equal penalties leave the dr_grpo advantages at +-0.5.
    assert ADVANTAGES["dr_grpo"](x).advantages[:, 0].tolist() == pytest.approx([0.5, -0.5])


def test_reinforce_pp_returns_to_go_then_batch_whitening_by_hand():
    x = inputs([[1.0, 0.0]], lengths=[3, 2], token_rewards=[[-0.1, -0.1, -0.1], [-0.2, -0.2, 0.0]])
    # Returns to go (gamma 1): row 0: 0.7, 0.8, 0.9 (the outcome on token 3); row 1: -0.4, -0.2.
    g = torch.tensor([0.7, 0.8, 0.9, -0.4, -0.2])
    expected = (g - g.mean()) / (g.std() + 1e-6)
    out = ADVANTAGES["reinforce_pp"](x).advantages
    assert torch.cat([out[0], out[1, :2]]).tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    assert out[1, 2] == 0
    # The baseline variant subtracts the group mean (0.5) from the outcome before the returns.
    g = torch.tensor([0.2, 0.3, 0.4, -0.9, -0.7])
    out = ADVANTAGES["reinforce_pp_baseline"](x).advantages
    assert torch.cat([out[0], out[1, :2]]).tolist() == pytest.approx(((g - g.mean()) / (g.std() + 1e-6)).tolist(),
                                                                    abs=1e-6)


def test_gae_matches_the_hand_unrolled_recursion():
    gamma, lam = 0.9, 0.8
    values = [[0.5, 0.2, -0.1], [0.3, 0.1, 0.0]]
    x = inputs([[1.0, -1.0]], lengths=[3, 2], token_rewards=[[0.0, -0.05, 0.0], [-0.1, 0.0, 0.0]],
               values=values, gamma=gamma, lam=lam)
    out = ADVANTAGES["gae"](x)
    for i, (n, outcome) in enumerate([(3, 1.0), (2, -1.0)]):
        r = [x.token_rewards[i, t].item() + (outcome if t == n - 1 else 0.0) for t in range(n)]
        v = values[i][:n] + [0.0]
        adv = [0.0] * n
        for t in reversed(range(n)):
            delta = r[t] + gamma * v[t + 1] - v[t]
            adv[t] = delta + gamma * lam * (adv[t + 1] if t + 1 < n else 0.0)
        assert out.returns[i, :n].tolist() == pytest.approx([a + b for a, b in zip(adv, v)], abs=1e-6)
        raw = (out.returns - x.values * x.mask)[i, :n]
        assert raw.tolist() == pytest.approx(adv, abs=1e-6)
    assert out.returns[1, 2] == 0 and out.advantages[1, 2] == 0
    flat = (out.returns - x.values * x.mask)[x.mask.bool()]
    assert out.advantages[x.mask.bool()].tolist() == pytest.approx(((flat - flat.mean()) / (flat.std() + 1e-6)).tolist(), abs=1e-5)


def test_returns_to_go_and_whiten_stay_inside_each_completion():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert returns_to_go(torch.tensor([[1.0, 2.0, 5.0]]), mask, 0.5).tolist() == [[2.0, 2.0, 0.0]]
    w = whiten(torch.tensor([[1.0, 3.0, 100.0]]), mask, 0.0)
    assert w[0, :2].tolist() == pytest.approx([-1 / math.sqrt(2), 1 / math.sqrt(2)]) and w[0, 2] == 0


# -- KL -------------------------------------------------------------------------------------------------------


def test_k1_and_k3_are_unbiased_and_k2_is_half_the_squared_log_ratio():
    """Under the policy's own distribution, E[k1] = E[k3] = KL(pi || pi_ref) exactly (torch.distributions)."""
    torch.manual_seed(0)
    pi = torch.distributions.Categorical(logits=torch.randn(5, 7))
    ref = torch.distributions.Categorical(logits=torch.randn(5, 7))
    exact = torch.distributions.kl_divergence(pi, ref)
    logp, logr = pi.logits, ref.logits  # normalised log-probs of every outcome
    for name in ("k1", "k3"):
        expectation = (pi.probs * kl_estimate(logp, logr, name)).sum(-1)
        assert torch.allclose(expectation, exact, atol=1e-6), name
    assert torch.allclose(kl_estimate(logp, logr, "k2"), 0.5 * (logr - logp) ** 2)
    assert (kl_estimate(logp, logr, "k3") >= 0).all()
    # Near the reference k2's expectation approaches the KL too (second order).
    close = torch.distributions.Categorical(logits=ref.logits + 0.01 * torch.randn(5, 7))
    k2 = (close.probs * kl_estimate(close.logits, logr, "k2")).sum(-1)
    assert torch.allclose(k2, torch.distributions.kl_divergence(close, ref), rtol=0.05, atol=1e-7)


def test_adaptive_kl_coefficient_rises_above_the_target_and_falls_below():
    assert adapt_kl_coef(0.1, kl=12.0, target=6.0, horizon=100, n=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))
    assert adapt_kl_coef(0.1, kl=3.0, target=6.0, horizon=100, n=10) == pytest.approx(0.1 * (1 - 0.2 * 0.1))
    assert adapt_kl_coef(0.1, kl=6.6, target=6.0, horizon=100, n=10) == pytest.approx(0.1 * (1 + 0.1 * 0.1))


# -- policy losses --------------------------------------------------------------------------------------------


def policy_inputs(logps, old, adv, mask=None):
    logps = torch.tensor(logps, requires_grad=True)
    mask = torch.ones_like(logps) if mask is None else torch.tensor(mask)
    return PolicyLogps(logps, torch.tensor(old), torch.tensor(adv), mask)


def test_ppo_clip_by_hand():
    r = math.log(1.5)
    x = policy_inputs([[r, r, 0.0]], [[0.0, 0.0, 0.0]], [[1.0, -1.0, 2.0]])
    loss, metrics = ppo_clip(x, eps_low=0.2, eps_high=0.2)
    # A > 0: min(1.5, 1.2) = 1.2; A < 0: min(-1.5, -1.2) = -1.5; ratio 1: -2.
    assert loss[0].tolist() == pytest.approx([-1.2, 1.5, -2.0])
    assert metrics["rl/clip_fraction"].tolist() == pytest.approx([2 / 3])
    loss.sum().backward()
    # The clipped token has no gradient; the others -A r.
    assert x.logps.grad[0].tolist() == pytest.approx([0.0, 1.5, -2.0])
    loss, _ = ppo_clip(x, eps_low=0.2, eps_high=0.6)  # clip-higher: 1.5 is inside (0.8, 1.6)
    assert loss[0, 0].item() == pytest.approx(-1.5)


def test_gspo_uses_one_geometric_mean_ratio_per_sequence():
    x = policy_inputs([[0.2, -0.1, 5.0]], [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]], mask=[[1.0, 1.0, 0.0]])
    loss, metrics = gspo(x, eps_low=0.5, eps_high=0.5)
    s = math.exp((0.2 - 0.1) / 2)
    assert loss[0].tolist() == pytest.approx([-s] * 3)
    loss, metrics = gspo(x, eps_low=3e-4, eps_high=4e-4)
    assert loss[0, 0].item() == pytest.approx(-(1 + 4e-4)) and metrics["rl/clip_fraction"].item() == 1.0


def test_cispo_keeps_the_gradient_of_clipped_tokens_and_policy_gradient_is_reinforce():
    r = math.log(2.0)
    x = policy_inputs([[r, 0.0]], [[0.0, 0.0]], [[1.0, -3.0]])
    loss, _ = cispo(x, eps_low=1.0, eps_high=0.28)
    assert loss[0].tolist() == pytest.approx([-1.28 * r, 0.0])
    loss.sum().backward()
    assert x.logps.grad[0].tolist() == pytest.approx([-1.28, 3.0])  # -sg(w) A, never zero
    x = policy_inputs([[0.0, 0.0]], [[0.0, 0.0]], [[2.0, -1.0]])
    policy_gradient(x).sum().backward()
    assert x.logps.grad[0].tolist() == pytest.approx([-2.0, 1.0])


def test_clipped_value_loss_by_hand():
    x = policy_inputs([[0.0, 0.0]], [[0.0, 0.0]], [[0.0, 0.0]])
    x.values = torch.tensor([[1.0, 0.5]])
    x.old_values = torch.tensor([[0.5, 0.45]])
    x.returns = torch.tensor([[0.0, 1.0]])
    loss, _ = value_loss(x, clip=0.2, hidden=8, module=None)
    # Token 0: max((1 - 0)^2, (0.7 - 0)^2) / 2; token 1: the estimate moved 0.05, inside the clip.
    assert loss[0].tolist() == pytest.approx([0.5, 0.125])


# -- the objective ------------------------------------------------------------------------------------------


def rollout_groups(tok, n_groups=3, g=3):
    torch.manual_seed(1)
    groups = []
    for k in range(n_groups):
        prompt = tok(f"what is {k} plus 2 ?")["input_ids"]
        completions = [tok(" the answer is " + " ".join(["5"] * (j + 1)) + " .")["input_ids"][1:] for j in range(g)]
        rewards = [float(j == k % g) for j in range(g)]
        adv = [[float(torch.randn(()).half())] * len(c) for c in completions]
        old = [[-2.0 + 0.125 * t for t in range(len(c))] for c in completions]
        ref = [[-2.5] * len(c) for c in completions]
        groups.append(RolloutGroup(prompt, completions, rewards, adv, old, ref))
    return groups


def objective_gradients(model, objective, groups, micro, tok, packed):
    from prefalign.training.batch_sources import StepBatches
    from prefalign.training.loop import accumulate_gradients

    model.zero_grad()
    batches = [collate_groups(groups[i:i + micro], list(range(i, min(i + micro, len(groups)))), tok.pad_token_id,
                              packed=packed, kl_coef=0.1) for i in range(0, len(groups), micro)]
    loss, _, _ = accumulate_gradients(model, objective, StepBatches(batches))
    return loss, [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("mode", ["token_mean", "sequence_mean", "constant"])
def test_every_aggregation_gives_the_same_gradient_however_the_step_is_split(tiny_model_dir, toy_tokenizer, mode):
    from transformers import AutoModelForCausalLM

    from prefalign.config.schema import LossTerm
    from prefalign.losses.registry import build_losses
    from prefalign.rl.objective import PolicyObjective

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = RLConfig(aggregation=mode, kl={"coef": 0.1, "placement": "loss"})
    objective = PolicyObjective(build_losses([LossTerm(name="ppo_clip")]), cfg)
    groups = rollout_groups(toy_tokenizer)
    whole_loss, whole = objective_gradients(model, objective, groups, 3, toy_tokenizer, True)
    for micro, packed in [(1, True), (2, True), (1, False)]:
        loss, grads = objective_gradients(model, objective, groups, micro, toy_tokenizer, packed)
        assert loss == pytest.approx(whole_loss, rel=1e-5, abs=1e-7)
        assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(whole, grads))


def test_aggregation_modes_by_hand():
    from prefalign.rl.objective import aggregate

    loss = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate(loss, mask, "token_mean", 10).item() == 6.0  # / 3 tokens by the loop
    assert aggregate(loss, mask, "sequence_mean", 10).item() == 4.0  # (2 + 2) / 2 sequences by the loop
    assert aggregate(loss, mask, "constant", 10).item() == pytest.approx(0.6)  # / 2 sequences by the loop


def test_a_packed_group_is_its_prompt_once_with_exactly_its_own_samples(toy_tokenizer):
    groups = rollout_groups(toy_tokenizer, n_groups=3, g=3)
    batch = collate_groups(groups, [0, 1, 2], toy_tokenizer.pad_token_id, packed=True)
    tokens = batch.tokens
    ids = tokens.input_ids.flatten()
    for gi, group in enumerate(groups):
        for j, completion in enumerate(group.completions):
            at = tokens.token_at[tokens.slot == gi * 3 + j]
            assert ids[at].tolist() == completion  # sequence g*G + j is sample j of group g
        prompt = torch.tensor(group.prompt_ids)
        rows = tokens.input_ids
        count = sum(int((rows[r].unfold(0, len(prompt), 1) == prompt).all(-1).sum()) for r in range(rows.shape[0]))
        assert count == 1  # the prompt is encoded once for its G completions
    assert batch.mask.sum(-1).tolist() == [len(c) for g in groups for c in g.completions]
    assert batch.rows(batch.old) == [r for g in groups for r in g.old]
    padded = collate_groups(groups, [0, 1, 2], toy_tokenizer.pad_token_id, packed=False)
    assert padded.rows(padded.advantages) == [r for g in groups for r in g.advantages]


# -- the source and the recipe ------------------------------------------------------------------------------


def rl_config(out, **trainer):
    return RLTrainConfig.model_validate({
        "model": {"name_or_path": "toy"}, "loss": [{"name": "ppo_clip"}],
        "rl": {"prompts": "toy-arithmetic", "group_size": 4, "max_new_tokens": 12, "epochs": 2, "minibatches": 2,
               "kl": {"coef": 0.05, "placement": "reward", "target": 1.0, "horizon": 100}},
        "trainer": {"output_dir": str(out), "max_steps": 6, "batch_size": 2, "lr": 1e-4, "schedule": "constant",
                    "progress": False, **trainer}})


def test_rollouts_take_old_logps_once_and_hand_out_shuffled_minibatches(tmp_path):
    from prefalign.rl.recipe import train_rl

    seen = []
    run = train_rl(rl_config(tmp_path / "r", max_steps=4), on_step=lambda s, m: seen.append(m))
    assert [m["rl/rollout"] for m in seen] == [0, 0, 0, 0]  # 2 epochs x 2 mini-batches = 4 steps a rollout
    assert seen[0]["rl/ratio"] == pytest.approx(1.0, abs=1e-5)  # the first step is on-policy
    assert seen[3]["rl/ratio"] != pytest.approx(1.0, abs=1e-7)  # later ones are not
    assert seen[0]["rl/groups"] == 4 and seen[0]["rl/kl_coef"] == 0.05
    from prefalign.online.rollouts import read_rollouts

    rows = read_rollouts(run.run_dir / "rollouts.jsonl")
    assert len(rows) == 4 and all(len(r["rewards"]) == 4 for r in rows)


def test_dynamic_sampling_keeps_only_groups_with_a_reward_spread(tmp_path):
    from prefalign.rl.recipe import train_rl

    cfg = rl_config(tmp_path / "d", max_steps=2)
    cfg.rl.dynamic_sampling, cfg.rl.epochs, cfg.rl.minibatches = True, 1, 1
    run = train_rl(cfg)
    from prefalign.online.rollouts import read_rollouts

    for r in read_rollouts(run.run_dir / "rollouts.jsonl"):
        assert r["kept"] == (len(set(r["rewards"])) > 1)


def test_rl_resume_after_kill_mid_rollout_is_bitwise_exact(tmp_path):
    from safetensors.torch import load_file

    from prefalign.online.rollouts import read_rollouts
    from prefalign.rl.recipe import train_rl

    straight = train_rl(rl_config(tmp_path / "straight", save_every=3, max_steps=8))
    killed = tmp_path / "killed"
    # Checkpoint at step 3 is inside rollout 0 (steps 0-3); killed after step 6, inside rollout 1.
    run_until_killed("from tests.test_rl import rl_config\nfrom prefalign.rl.recipe import train_rl",
                     f"train_rl(rl_config({str(killed)!r}, save_every=3, max_steps=8), on_step=kill)", 6)
    train_rl(rl_config(killed, save_every=3, max_steps=8), resume=True)
    ws, wr = (load_file(d / "model" / "model.safetensors") for d in (straight.run_dir, killed))
    assert ws.keys() == wr.keys() and all(torch.equal(ws[k], wr[k]) for k in ws)
    assert read_rollouts(killed / "rollouts.jsonl") == read_rollouts(straight.run_dir / "rollouts.jsonl")
    assert [m["loss"] for m in read_metrics(killed)] == [m["loss"] for m in read_metrics(straight.run_dir)]
    assert [m["rl/kl_coef"] for m in read_metrics(killed)] == [m["rl/kl_coef"] for m in read_metrics(straight.run_dir)]


def test_ppo_trains_its_critic_and_checkpoints_it(tmp_path):
    """Four epochs over one rollout: the critic's error on those same samples falls step by step."""
    from safetensors.torch import load_file

    from prefalign.rl.recipe import train_rl

    base = rl_config(tmp_path / "ppo", max_steps=4, save_every=4, lr=1e-3).model_dump()
    cfg = RLTrainConfig.model_validate(base | {"loss": [{"name": "ppo_clip"}, {"name": "value", "weight": 0.5}],
                                               "rl": base["rl"] | {"advantage": "gae", "epochs": 4, "minibatches": 1,
                                                                   "rewards": [{"name": "length"}]}})
    seen = []
    train_rl(cfg, on_step=lambda s, m: seen.append(m["rl/value_error"]))
    assert seen == sorted(seen, reverse=True) and seen[-1] < 0.9 * seen[0], seen
    tensors = load_file(tmp_path / "ppo" / "checkpoints" / "step-00000004" / "loss_modules.safetensors")
    assert any("weight" in k for k in tensors)


def test_rl_refuses_mismatched_pieces_with_one_line(tmp_path):
    from prefalign.rl.recipe import train_rl

    cfg = rl_config(tmp_path / "x")
    bad = RLTrainConfig.model_validate(cfg.model_dump() | {"loss": [{"name": "dpo"}]})
    with pytest.raises(ValueError, match="policy losses"):
        train_rl(bad)
    bad = RLTrainConfig.model_validate(cfg.model_dump() | {"rl": cfg.rl.model_dump() | {"advantage": "gae"}})
    with pytest.raises(ValueError, match="value"):
        train_rl(bad)
    bad = RLTrainConfig.model_validate(cfg.model_dump() | {"rl": cfg.rl.model_dump() | {"advantage": "grpoo"}})
    with pytest.raises(ValueError, match="unknown estimator"):
        train_rl(bad)
    bad = RLTrainConfig.model_validate(cfg.model_dump() | {"rl": cfg.rl.model_dump() | {"rewards": [{"name": "golf"}]}})
    with pytest.raises(ValueError, match="rl.rewards.0.name"):
        train_rl(bad)
    bad = RLTrainConfig.model_validate(cfg.model_dump() | {"rl": cfg.rl.model_dump() | {
        "kl": {"coef": 0.1, "placement": "loss", "target": 1.0}}})
    with pytest.raises(ValueError, match="placement: reward"):
        train_rl(bad)


def test_grpo_on_two_arithmetic_prompts_learns_their_answers(tmp_path):
    """The smallest toy run: the verifier's reward on two prompts rises from the base's level to near 1."""
    from prefalign.rl.recipe import train_rl

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "what is 7 plus 5 ?"}\n{"prompt": "compute 3 minus 1 ."}\n')
    cfg = RLTrainConfig.model_validate({
        "model": {"name_or_path": "toy"}, "loss": [{"name": "ppo_clip"}],
        "rl": {"prompts": str(prompts), "group_size": 8, "max_new_tokens": 16, "kl": {"coef": 0.04}},
        "trainer": {"output_dir": str(tmp_path / "g"), "max_steps": 30, "batch_size": 2, "lr": 3e-4,
                    "schedule": "constant", "progress": False}})
    train_rl(cfg)
    rewards = [m["rl/reward_mean"] for m in read_metrics(tmp_path / "g")]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.5 and last > 0.8, (first, last)


# -- constrained RLHF and Elastic Reset -----------------------------------------------------------------------


def test_lagrange_multiplier_rises_above_the_threshold_and_falls_below_but_never_under_zero():
    from prefalign.rl.constraints import lagrangian_reward, update_multiplier

    assert update_multiplier(0.5, mean_cost=0.8, threshold=0.3, lr=0.2) == pytest.approx(0.6)
    assert update_multiplier(0.5, mean_cost=0.1, threshold=0.3, lr=0.2) == pytest.approx(0.46)
    assert update_multiplier(0.01, mean_cost=0.0, threshold=0.3, lr=0.2) == 0.0
    assert lagrangian_reward(1.0, 0.5, 1.0, normalise=True) == pytest.approx(0.25)
    assert lagrangian_reward(1.0, 0.5, 1.0, normalise=False) == pytest.approx(0.5)


def test_constrained_run_moves_its_multiplier_with_the_cost(tmp_path):
    """Cost = the length term with a threshold the base is far above: the multiplier climbs every rollout
    while the mean cost stays above the threshold, by exactly lr x (cost - threshold)."""
    from prefalign.rl.recipe import train_rl

    base = rl_config(tmp_path / "c", max_steps=4).model_dump()
    cfg = RLTrainConfig.model_validate(base | {"rl": base["rl"] | {
        "epochs": 1, "minibatches": 1, "cost": {"name": "length", "threshold": 0.05, "multiplier_lr": 0.5}}})
    seen = []
    train_rl(cfg, on_step=lambda s, m: seen.append((m["rl/lagrange_multiplier"], m["rl/cost_mean"])))
    assert seen[0][0] == 0.0
    for (lam, cost), (next_lam, _) in zip(seen, seen[1:]):
        assert next_lam == pytest.approx(max(0.0, lam + 0.5 * (cost - 0.05)))
        assert cost > 0.05 and next_lam > lam


def test_elastic_reset_averages_then_resets_policy_to_average_and_average_to_initial():
    from prefalign.rl.elastic_reset import ElasticReset

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    hook = ElasticReset(model, every=2, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(4.0)
    hook.after_step(model, 1)  # ema = 0.5 * 0 + 0.5 * 4 = 2
    assert hook.ema["weight"].item() == 2.0 and model.weight.item() == 4.0
    with torch.no_grad():
        model.weight.fill_(6.0)
    state = {k: v.clone() for k, v in hook.state_tensors().items()}
    metrics = hook.after_step(model, 2)  # ema = 0.5 * 2 + 0.5 * 6 = 4, then the reset
    assert model.weight.item() == 4.0 and hook.ema["weight"].item() == 0.0 and metrics["rl/elastic_resets"] == 1
    hook.load_state_tensors(state)
    assert hook.ema["weight"].item() == 2.0 and hook.resets == 0


def test_every_rl_example_config_validates_and_builds(tmp_path):
    from pathlib import Path

    from prefalign.config.loading import load_config
    from prefalign.losses.registry import build_losses
    from prefalign.rl.recipe import check_rl_config

    examples = sorted((Path(__file__).parent.parent / "examples" / "rl").glob("*.yaml"))
    assert {p.stem for p in examples} >= {"grpo", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "reinforce_pp", "ppo"}
    for path in examples:
        cfg = load_config(path, [], schema=RLTrainConfig)
        check_rl_config(cfg, build_losses(cfg.loss))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_engine_scores_sampled_tokens_as_the_sampler_drew_them(toy_tokenizer, temperature):
    """The old log-probs of a rollout are the sampler's own: generate's per-step distribution (left-padded
    batch, at the sampling temperature) gives the same log-prob of each drawn token as the packed and padded
    engine at that temperature."""
    from transformers import AutoModelForCausalLM

    from prefalign.decoding.sampling import left_pad
    from prefalign.models.loading import TOY_BASE
    from prefalign.models.logprobs import sequence_logps

    model = AutoModelForCausalLM.from_pretrained(str(TOY_BASE)).eval()
    prompts = ["what is 7 plus 5 ?", "review the old red lamp ."]
    encoded, ids, attn = left_pad(toy_tokenizer, prompts)
    torch.manual_seed(0)
    out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=10, do_sample=True, temperature=temperature,
                         top_k=0, top_p=1.0, output_scores=True, return_dict_in_generate=True,
                         pad_token_id=toy_tokenizer.pad_token_id, eos_token_id=toy_tokenizer.eos_token_id)
    new = out.sequences[:, ids.shape[1]:]
    sampler = torch.stack(out.scores, 1).log_softmax(-1).gather(-1, new[..., None]).squeeze(-1)
    groups, expected = [], []
    for i, prompt_ids in enumerate(encoded):
        row = new[i].tolist()
        n = row.index(toy_tokenizer.eos_token_id) + 1 if toy_tokenizer.eos_token_id in row else len(row)
        groups.append(RolloutGroup(prompt_ids, [row[:n]], [0.0]))
        expected.append(sampler[i, :n].tolist())
    for packed in (True, False):
        batch = collate_groups(groups, [0, 1], toy_tokenizer.pad_token_id, packed=packed)
        with torch.no_grad():
            got = batch.rows(sequence_logps(model, batch.tokens, keep_tokens=True, temperature=temperature).tokens)
        for g, e in zip(got, expected):
            assert g == pytest.approx(e, abs=2e-5)
