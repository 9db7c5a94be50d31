"""Online methods on the rollout seam beyond online DPO: RSO's rejection sampling and ScPO's
self-consistency vote and loss, each against its formula, and a short run of each."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from prefalign.config.schema import OnlineTrainConfig
from prefalign.losses import LOSSES, PairLogps
from prefalign.losses.registry import ensure_registered
from prefalign.online.pairs import PairChoice, PairContext, rso, rso_acceptance, rso_sample
from prefalign.online.rollouts import _above_margin, read_rollouts
from prefalign.online.scorers import build_scorer


def test_rso_acceptance_is_the_tilted_ratio_to_the_best_sample():
    assert rso_acceptance([1.0, 0.0, -1.0], beta=0.5) == pytest.approx([1.0, math.exp(-2), math.exp(-4)])


def test_rso_samples_come_from_the_reward_tilted_distribution():
    # The first accepted of a uniform proposal with acceptance exp((r - r_max)/beta) is drawn with
    # probability proportional to exp(r / beta).
    scores, beta = [0.0, 0.5, 1.0, 1.5], 0.5
    rng = random.Random(0)
    counts = [0] * 4
    n = 20000
    for _ in range(n):
        counts[rso_sample(scores, beta, 1, rng)[0]] += 1
    tilted = [math.exp(r / beta) for r in scores]
    for c, t in zip(counts, tilted):
        assert c / n == pytest.approx(t / sum(tilted), abs=0.01)
    assert sorted(rso_sample(scores, beta, 4, random.Random(1))) == [0, 1, 2, 3]  # m = k accepts all


def test_rso_pairs_the_accepted_samples_and_counts_ties():
    choice = rso([2.0, 1.0, 0.0, 2.0], ["a", "b", "c", "d"], PairContext(random.Random(3), rso_beta=100.0,
                                                                      rso_accepted=4))
    assert len(choice.pairs) + choice.ties == 2
    for a, b in choice.pairs:
        assert [2.0, 1.0, 0.0, 2.0][a] > [2.0, 1.0, 0.0, 2.0][b]
    assert rso([1.0, 0.0], ["x", " "], PairContext()).pairs == []  # an empty sample makes no pair


def test_self_consistency_votes_within_each_prompt_and_never_reads_the_answer(monkeypatch):
    import prefalign.online.scorers as scorers

    def forbidden(*args, **kwargs):
        raise AssertionError("ScPO must not see the true answer")
    monkeypatch.setattr(scorers, "parse_prompt", forbidden)
    monkeypatch.setattr(scorers, "gold_reward", forbidden)
    vote = build_scorer("self_consistency")
    prompts = ["what is 2 plus 2 ?"] * 4 + ["no answer here ."] * 2
    responses = [" 4 .", " it is 4 .", " 5 .", " no idea .", " 7", " 7 ."]
    assert vote.score(prompts, responses, seed=0) == pytest.approx([0.5, 0.5, 0.25, 0.0, 1.0, 1.0])


def test_scpo_loss_is_the_vote_weighted_dpo_plus_nll_of_the_chosen():
    lp = PairLogps(chosen=torch.tensor([-4.0]), rejected=torch.tensor([-6.0]), chosen_tokens=torch.tensor([4.0]),
                   rejected_tokens=torch.tensor([3.0]), ref_chosen=torch.tensor([-5.0]),
                   ref_rejected=torch.tensor([-5.5]),
                   extras={"score_chosen": torch.tensor([0.75]), "score_rejected": torch.tensor([0.25])})
    ensure_registered()
    loss, metrics = LOSSES["scpo"].fn(lp, beta=0.5, alpha=1.0, nll_normalize="sequence")
    h = (-4.0 + 5.0) - (-6.0 + 5.5)
    expected = 0.5 * (-F.logsigmoid(torch.tensor(0.5 * h)).item() + 4.0 / 4.0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["scpo/weight"].item() == pytest.approx(0.5)


def test_pairs_under_the_vote_margin_are_dropped():
    choice = PairChoice([(0, 1), (2, 3)], 0, "two")
    kept = _above_margin(choice, [0.75, 0.5, 1.0, 0.0], 0.5)
    assert kept.pairs == [(2, 3)] and "under margin" in kept.why


def _online(out, online: dict, loss: dict) -> OnlineTrainConfig:
    return OnlineTrainConfig.model_validate({
        "model": {"name_or_path": "toy"}, "loss": [loss],
        "online": {"samples": 4, "generate_every": 2, "max_new_tokens": 16} | online,
        "trainer": {"output_dir": str(out), "max_steps": 2, "batch_size": 4, "lr": 5e-4, "progress": False,
                    "seed": 1, "schedule": "constant"}})


def test_rso_and_scpo_run_on_the_rollout_seam(tmp_path):
    from prefalign.online.recipe import train_online

    run = train_online(_online(tmp_path / "rso", {"pairs": "rso", "rso_beta": 0.5}, {"name": "hinge", "beta": 0.5}))
    rows = read_rollouts(run.run_dir / "rollouts.jsonl")
    assert all(r["why"].startswith(("rso", "fewer")) for r in rows)
    run = train_online(_online(tmp_path / "scpo", {"prompts": "toy-arithmetic", "scorer": "self_consistency",
                                                  "min_margin": 0.25, "samples": 8}, {"name": "scpo"}))
    rows = read_rollouts(run.run_dir / "rollouts.jsonl")
    for r in rows:
        for a, b in r["pairs"]:
            assert r["scores"][a] - r["scores"][b] >= 0.25
    with pytest.raises(ValueError, match="rso_accepted"):
        _online(tmp_path / "bad", {"pairs": "rso", "rso_accepted": 6}, {"name": "dpo"})


@pytest.mark.parametrize("name", ["scpo.yaml", "rso.yaml"])
def test_example_configs_validate(name):
    from prefalign.config.loading import load_config
    from prefalign.losses import build_losses

    cfg = load_config(f"examples/{name}", schema=OnlineTrainConfig)
    assert build_losses(cfg.loss)
