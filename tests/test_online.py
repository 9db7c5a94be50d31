"""Online preference optimisation: pair rules, scorers, the rollout source and its log, exact resume after a
real SIGKILL mid-round, and a toy run that raises the gold reward of the policy's own samples."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from prefalign.config.schema import OnlineTrainConfig
from prefalign.online.pairs import all_pairs, best_vs_worst
from prefalign.online.rollouts import read_rollouts
from prefalign.online.scorers import build_scorer
from prefalign.training.metrics import read_metrics
from tests.kill_helpers import run_until_killed


def test_best_vs_worst_skips_and_counts_ties_and_empty_samples():
    assert best_vs_worst([0.1, 0.9, -0.5], ["a", "b", "c"]).pairs == [(1, 2)]
    tie = best_vs_worst([0.3, 0.3, 0.3], ["a", "b", "c"])
    assert tie.pairs == [] and tie.ties == 1
    # The empty sample scores lowest but is no response: the worst usable one is rejected instead.
    assert best_vs_worst([0.1, 0.9, -5.0], ["a", "b", " "]).pairs == [(1, 0)]
    assert best_vs_worst([1.0, 0.0], ["same", "same"]).pairs == []


def test_all_pairs_orders_by_score_and_counts_ties():
    choice = all_pairs([0.5, 0.5, 1.0], ["a", "b", "c"])
    assert sorted(choice.pairs) == [(2, 0), (2, 1)] and choice.ties == 1


def test_scorers_gold_noisy_and_verifier():
    prompts, responses = ["compute 2 plus 3 ."] * 2, ["the answer is 5 .", "it is 7 ."]
    assert build_scorer("verifier").score(prompts, responses, 0) == [1.0, 0.0]
    noisy = build_scorer("noisy_gold", noise=0.5)
    assert noisy.score(prompts, responses, 7) == noisy.score(prompts, responses, 7)  # seeded per call
    assert noisy.score(prompts, responses, 7) != noisy.score(prompts, responses, 8)
    gold = build_scorer("gold").score(prompts, responses, 0)
    assert gold[0] == pytest.approx(1.7) and gold[0] > gold[1]
    with pytest.raises(ValueError, match="arithmetic"):
        build_scorer("verifier").score(["review the red lamp ."], ["nice"], 0)
    with pytest.raises(ValueError, match="unknown online.scorer"):
        build_scorer("oracle")


def online_config(out, **trainer) -> OnlineTrainConfig:
    t = dict(output_dir=str(out), max_steps=6, batch_size=4, lr=5e-4, progress=False, seed=1, schedule="constant") | trainer
    return OnlineTrainConfig.model_validate({"model": {"name_or_path": "toy"}, "loss": [{"name": "dpo", "beta": 0.1}],
                                             "online": {"samples": 3, "generate_every": 2, "max_new_tokens": 24},
                                             "trainer": t})


def test_rollouts_are_logged_with_their_policy_step_and_sampling_leaves_the_global_rng_alone(tmp_path):
    from prefalign.online.recipe import train_online

    seen = []
    run = train_online(online_config(tmp_path / "r", max_steps=4),
                       on_step=lambda step, m: seen.append((step, m["online/round"])))
    assert [r for _, r in seen] == [0.0, 0.0, 1.0, 1.0]
    rows = read_rollouts(run.run_dir / "rollouts.jsonl")
    assert {r["round"]: r["policy_step"] for r in rows} == {0: 0, 1: 2}
    for r in rows:
        assert len(r["completions"]) == len(r["scores"]) == 3
        for (a, b), _ in zip(r["pairs"], r["buffer_index"]):
            assert r["scores"][a] > r["scores"][b]
    # Each round's log holds every pair it trained on (4 pairs a step, 2 steps a round).
    assert all(sum(len(r["buffer_index"]) for r in rows if r["round"] == k) >= 8 for k in (0, 1))

    from prefalign.data.collate import collate_pairs
    from prefalign.models.loading import load_policy, load_tokenizer
    from prefalign.online.recipe import online_prompts
    from prefalign.online.rollouts import RolloutSource
    from prefalign.online.scorers import GoldScorer

    cfg = online_config(tmp_path / "x")
    tok = load_tokenizer(cfg.model)
    source = RolloutSource(load_policy(cfg.model), tok, online_prompts("toy", 0), GoldScorer(), cfg.online,
                           cfg.trainer, lambda items, idx: collate_pairs(items, idx, tok.pad_token_id))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    source.step(0)
    assert torch.equal(before, torch.get_rng_state())


def test_online_resume_after_kill_mid_round_is_bitwise_exact_and_logs_each_rollout_once(tmp_path):
    from prefalign.online.recipe import train_online

    straight = train_online(online_config(tmp_path / "straight", save_every=3))
    killed = tmp_path / "killed"
    # Killed after step 5: the checkpoint of step 3 is mid-round (rounds start at steps 0, 2, 4), and round 2
    # was sampled and logged after it, so the resumed run samples round 2 again.
    run_until_killed("from tests.test_online import online_config\nfrom prefalign.online.recipe import train_online",
                     f"train_online(online_config({str(killed)!r}, save_every=3), on_step=kill)", 5)
    assert max(r["round"] for r in read_rollouts(killed / "rollouts.jsonl")) == 2
    train_online(online_config(killed, save_every=3), resume=True)
    ws, wr = (load_file(d / "model" / "model.safetensors") for d in (straight.run_dir, killed))
    assert ws.keys() == wr.keys() and all(torch.equal(ws[k], wr[k]) for k in ws)
    assert read_rollouts(killed / "rollouts.jsonl") == read_rollouts(straight.run_dir / "rollouts.jsonl")
    assert [m["loss"] for m in read_metrics(killed)] == [m["loss"] for m in read_metrics(straight.run_dir)]


@pytest.mark.slow
def test_online_dpo_raises_the_gold_reward_of_its_own_samples(tmp_path):
    """The toy run: 40 steps of online DPO with the gold reward as the labeller; the mean gold reward of the
    samples of the last rounds is well above that of the first (the base's)."""
    from prefalign.online.recipe import train_online

    cfg = online_config(tmp_path / "long", max_steps=40, batch_size=16, lr=2e-4)
    cfg.online.generate_every = 1
    cfg.online.samples = 4
    cfg.online.max_new_tokens = 48
    train_online(cfg)
    scores = [m["online/round_mean_score"] for m in read_metrics(tmp_path / "long")]
    first, last = sum(scores[:5]) / 5, sum(scores[-5:]) / 5
    assert last > first + 0.5, (first, last)


def test_iterative_dpo_refreshes_the_reference_each_round_and_raft_needs_none(tmp_path):
    from prefalign.config import load_config
    from prefalign.online.recipe import train_online

    cfg = load_config("examples/iterative_dpo.yaml", [f"trainer.output_dir={tmp_path / 'it'}", "trainer.max_steps=4",
                                                       "trainer.batch_size=4", "online.generate_every=2",
                                                       "schedule.update_every=2", "trainer.progress=false"],
                      schema=OnlineTrainConfig)
    train_online(cfg)
    logged = read_metrics(tmp_path / "it")
    assert [m["reference/updates"] for m in logged] == [0.0, 1.0, 1.0, 2.0]
    # After a refresh the reference is the policy that samples the next round: its implicit rewards start at 0.
    assert logged[2]["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
    raft = load_config("examples/raft.yaml", [f"trainer.output_dir={tmp_path / 'raft'}", "trainer.max_steps=2",
                                              "trainer.batch_size=4", "trainer.progress=false"], schema=OnlineTrainConfig)
    run = train_online(raft)
    assert run.loop.steps == 2 and "rewards/chosen" not in read_metrics(run.run_dir)[-1]


def test_dual_margin_keeps_the_pairs_both_margins_call_clear():
    from prefalign.data.errors import RowRef
    from prefalign.data.tokenize import TokenizedPair
    from prefalign.online.selection import keep_dual_margin

    def pair(margin):
        return TokenizedPair([1], [2], [3], RowRef("r", 0), {"score_chosen": margin, "score_rejected": 0.0})

    pairs = [pair(m) for m in (1.0, 2.0, 3.0, 4.0)]
    implicit = np.array([40.0, 10.0, 30.0, 20.0])  # z sums: -0.45, -1.34, 1.34, 0.45 (as in test_selection)
    assert keep_dual_margin(pairs, implicit, 2) == [2, 3]


def test_online_dual_margin_samples_twice_the_pairs_and_keeps_half_by_both_margins(tmp_path):
    from prefalign.online import rollouts, selection
    from prefalign.online.recipe import train_online

    seen = []
    real = selection.keep_dual_margin

    def recording(pairs, implicit, need):
        seen.append((len(pairs), need, implicit.copy()))
        return real(pairs, implicit, need)

    rollouts.keep_dual_margin = recording
    try:
        cfg = online_config(tmp_path / "r", max_steps=4)
        cfg.online.select = "dual_margin"
        run = train_online(cfg)
    finally:
        rollouts.keep_dual_margin = real
    assert [(n, need) for n, need, _ in seen] == [(16, 8), (16, 8)]  # 2 steps of 4 pairs a round, keep 0.5
    assert np.all(seen[0][2] == 0) and np.any(seen[1][2] != 0)  # round 0: the policy is still the reference
    rows = read_rollouts(run.run_dir / "rollouts.jsonl")
    for k in (0, 1):
        indices = [i for r in rows if r["round"] == k for i in r["buffer_index"]]
        assert sorted(i for i in indices if i is not None) == list(range(8)) and indices.count(None) == 8
    assert any("dropped by dual_margin" in r["why"] for r in rows)
