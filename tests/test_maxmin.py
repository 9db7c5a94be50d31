"""MaxMin-RLHF: the EM steps and the worst-off-group scorer by hand, the refusals, and a fit on the toy task
served through the scorer."""

import json

import numpy as np
import pytest

from prefalign.config.schema import DataConfig, ModelConfig, RewardConfig, RewardTrainConfig, TrainerConfig
from prefalign.online.scorers import build_scorer
from prefalign.pluralistic.maxmin import (
    MaxMinScorer,
    fit_groups,
    initial_assignment,
    pooled_assignment,
    reassign,
)
from prefalign.toy.reward_data import toy_reward_rows
from tests.conftest import write_jsonl


def test_initial_assignment_deals_the_users_evenly_and_reproducibly():
    users = [f"u{i}" for i in range(7)]
    a = initial_assignment(users, 3, seed=0)
    assert sorted(list(a.values()).count(k) for k in range(3)) == [2, 2, 3]
    assert a == initial_assignment(list(reversed(users)), 3, seed=0)


def test_the_pooled_start_cuts_the_users_by_how_well_one_model_fits_them():
    fit = {"a": -0.2, "b": -0.9, "c": -0.4, "d": -0.7, "e": -0.3}
    assert pooled_assignment(fit, 2) == {"a": 0, "e": 0, "c": 0, "d": 1, "b": 1}
    assert pooled_assignment(fit, 3) == {"a": 0, "e": 0, "c": 1, "d": 1, "b": 2}


def test_the_e_step_takes_the_likeliest_group_and_never_leaves_one_empty():
    loglik = [{"a": -1.0, "b": -2.0, "c": -9.0}, {"a": -3.0, "b": -2.5, "c": -1.0}]
    assert reassign(loglik, {"a": 1, "b": 1, "c": 0}) == {"a": 0, "b": 0, "c": 1}
    # every user likelier under group 0: group 1 takes the one whose move costs least (c: 0.5 nats)
    loglik = [{"a": -1.0, "b": -2.0, "c": -3.0}, {"a": -5.0, "b": -9.0, "c": -3.5}]
    assert reassign(loglik, {"a": 0, "b": 1, "c": 1}) == {"a": 0, "b": 0, "c": 1}


class FixedScorer:
    def __init__(self, scores):
        self.scores = scores

    def score(self, prompts, responses):
        return self.scores


def test_the_scorer_serves_the_group_worst_off_on_the_batch():
    scorer = MaxMinScorer.__new__(MaxMinScorer)
    # standardised: group 0 [(1 - 1)/2, (5 - 1)/2] = [0, 2] (mean 1); group 1 [(0 - 0)/1, (-1 - 0)/1] = [0, -1]
    scorer.models = [(FixedScorer([1.0, 5.0]), 1.0, 2.0), (FixedScorer([0.0, -1.0]), 0.0, 1.0)]
    assert scorer.score(["p", "p"], ["x", "y"], seed=0) == [0.0, -1.0] and scorer.last_group == 1
    scorer.models[1] = (FixedScorer([4.0, 4.0]), 0.0, 1.0)
    assert scorer.score(["p", "p"], ["x", "y"], seed=0) == [0.0, 2.0] and scorer.last_group == 0


def test_refusals_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="maxmin needs a folder"):
        build_scorer("maxmin")
    with pytest.raises(FileNotFoundError, match="rm groups"):
        build_scorer(f"maxmin:{tmp_path}")
    data = write_jsonl(tmp_path / "p.jsonl", toy_reward_rows(8, seed=0))
    with pytest.raises(ValueError, match=r"p\.jsonl, line 1: no 'user' column"):
        fit_groups(config(data, tmp_path / "x", 2), 2, 1, tmp_path / "g")


def config(train, out, steps):
    return RewardTrainConfig(model=ModelConfig(name_or_path="toy"), data=DataConfig(train=str(train), max_length=96),
                             reward=RewardConfig(), trainer=TrainerConfig(output_dir=str(out), max_steps=steps,
                                                                          batch_size=16, lr=3e-4, schedule="constant",
                                                                          progress=False))


def test_em_writes_a_reward_model_per_group_that_the_scorer_serves(tmp_path):
    """Six annotators, three of each taste, 600 pairs; a reward model per group (80 steps, 2 rounds) from the
    pooled start. (From a random start at these settings EM did not separate the tastes: no annotator moved.)"""
    tastes = {f"u{i}": "quality" if i < 3 else "brief" for i in range(6)}
    data = write_jsonl(tmp_path / "p.jsonl", toy_reward_rows(600, seed=0, tastes=tastes))
    fit = fit_groups(config(data, tmp_path / "unused", 80), groups=2, rounds=2, out=tmp_path / "g")
    assert set(fit.assignment) == set(tastes) and set(fit.assignment.values()) == {0, 1} and len(fit.rounds) <= 2
    groups = {k: {tastes[u] for u, g in fit.assignment.items() if g == k} for k in (0, 1)}
    assert sorted(map(sorted, groups.values())) == [["brief"], ["quality"]]  # the pooled start separates them
    saved = json.loads((tmp_path / "g" / "groups.json").read_text())
    assert saved["assignment"] == fit.assignment and len(saved["models"]) == 2
    assert all(m["std"] > 0 for m in saved["models"])
    scorer = build_scorer(f"maxmin:{tmp_path / 'g'}")
    rows = toy_reward_rows(8, seed=5)
    prompts, responses = [r["prompt"] for r in rows], [r["chosen"] for r in rows]
    z = scorer.group_rewards(prompts, responses)
    scores = scorer.score(prompts, responses, seed=0)
    assert np.allclose(scores, z[np.argmin(z.mean(axis=1))])
