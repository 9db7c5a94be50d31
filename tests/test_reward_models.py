"""Reward models: losses and metrics against hand-computed values, the head's pooling on either padding side
and in packed batches, saving and loading, and training on the toy task."""

import json
import math

import numpy as np
import pytest
import torch

from prefalign.config.schema import DataConfig, ModelConfig, RewardConfig, RewardTrainConfig, TrainerConfig
from prefalign.data.collate import TokenBatch, collate_pairs
from prefalign.rewards.gpm import preference_score
from prefalign.rewards.losses import bradley_terry, gpm_loss, multi_objective_bradley_terry
from prefalign.rewards.metrics import (
    expected_calibration_error,
    pair_accuracy,
    ranking_accuracy,
    section_scores,
    subset_accuracies,
)
from prefalign.rewards.model import RewardSpec, backbone_kind, build_reward_model, load_reward_model
from prefalign.rewards.train import train_reward_model
from prefalign.toy.reward_data import toy_reward_rows
from tests.conftest import write_jsonl


def sig(x):
    return 1 / (1 + math.exp(-x))


# -- losses and metrics by hand ------------------------------------------------------------------------------

def test_bradley_terry_with_margin_and_centring_by_hand():
    r_w, r_l, m = torch.tensor([1.0, 0.2]), torch.tensor([0.5, 0.4]), torch.tensor([0.3, 0.0])
    expected = [-math.log(sig(1.0 - 0.5 - 0.3)) + 0.1 * 1.5**2, -math.log(sig(0.2 - 0.4)) + 0.1 * 0.6**2]
    assert bradley_terry(r_w, r_l, m, center=0.1).tolist() == pytest.approx(expected, rel=1e-6)
    assert bradley_terry(r_w, r_l).tolist() == pytest.approx([-math.log(sig(0.5)), -math.log(sig(-0.2))], rel=1e-6)


def test_multi_objective_bradley_terry_skips_objectives_without_a_signal():
    r_w, r_l = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    labels = torch.tensor([[1.0, -1.0, 0.0]])  # better on the first, worse on the second, no signal on the third
    expected = (-math.log(sig(1.0)) - math.log(sig(1.0))) / 2
    assert multi_objective_bradley_terry(r_w, r_l, labels).item() == pytest.approx(expected, rel=1e-6)


def test_gpm_score_is_skew_symmetric_and_represents_a_cycle():
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])  # rock, paper, scissors on a circle
    v = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    scales = torch.tensor([2.0])
    s = lambda i, j: preference_score(v[i:i + 1], v[j:j + 1], scales).item()  # noqa: E731
    # s(i, j) = lambda * sin(theta_j - theta_i): each beats the one before it on the circle
    assert s(1, 0) == pytest.approx(-2 * math.sin(2 * math.pi / 3), abs=1e-6)
    assert s(0, 1) == pytest.approx(-s(1, 0)) and s(0, 0) == 0
    assert s(0, 1) > 0 and s(1, 2) > 0 and s(2, 0) > 0  # 0 > 1 > 2 > 0: a cycle
    assert gpm_loss(v[:1], v[1:2], scales).item() == pytest.approx(-math.log(sig(s(0, 1))), rel=1e-6)


def test_accuracy_sections_and_calibration_by_hand():
    assert pair_accuracy(np.array([1.0, -1.0, 0.0, 2.0])) == pytest.approx(0.625)
    per = subset_accuracies(np.array([1, 1, -1, 1, -1, -1]), ["a", "a", "a", "b", "c", "c"])
    c1 = sig(1.0)  # every pair's confidence: one ECE bin per subset
    assert per == {"a": {"accuracy": pytest.approx(2 / 3), "ece": pytest.approx(abs(2 / 3 - c1)), "n": 3},
                   "b": {"accuracy": 1.0, "ece": pytest.approx(1 - c1), "n": 1},
                   "c": {"accuracy": 0.0, "ece": pytest.approx(c1), "n": 2}}
    scores = section_scores(per, {"chat": ["a", "b"], "safety": ["c"]})
    assert scores["chat"] == pytest.approx((2 / 3 * 3 + 1 * 1) / 4)  # weighted by example counts
    assert scores["overall"] == pytest.approx((scores["chat"] + 0.0) / 2)
    # two pairs at confidence s(2) (one right, one wrong) and one at s(0.1), right
    margins = np.array([2.0, -2.0, 0.1])
    c2, c01 = sig(2.0), sig(0.1)
    expected = 2 / 3 * abs(0.5 - c2) + 1 / 3 * abs(1.0 - c01)
    assert expected_calibration_error(margins, bins=10) == pytest.approx(expected, rel=1e-6)
    assert ranking_accuracy(np.array([-3.0, -5.0]), np.array([-4.0, -4.0])) == 0.5


# -- the head on a decoder backbone -------------------------------------------------------------------------

def left_padded(batch: TokenBatch) -> TokenBatch:
    ids, attn, comp = (torch.zeros_like(batch.input_ids) for _ in range(3))
    width = batch.input_ids.shape[1]
    for i, n in enumerate(batch.attention_mask.sum(-1).tolist()):
        ids[i, width - n:] = batch.input_ids[i, :n]
        attn[i, width - n:] = 1
        comp[i, width - n:] = batch.completion_mask[i, :n]
    return TokenBatch(ids, attn, comp)


def tokenized_pairs(model_dir, kind="decoder"):
    from prefalign.data.errors import RowRef
    from prefalign.data.examples import PreferencePair
    from prefalign.models.loading import load_tokenizer
    from prefalign.rewards.inputs import RewardTokenizer
    from tests.conftest import PAIRS

    tok = RewardTokenizer(load_tokenizer(ModelConfig(name_or_path=str(model_dir))), kind, 64)
    return tok, [tok.pair(PreferencePair(p["prompt"], p["chosen"], p["rejected"], RowRef("x", i)))
                 for i, p in enumerate(PAIRS)]


def test_decoder_reward_reads_the_last_real_token_on_either_padding_side_and_in_packed_batches(tiny_model_dir):
    torch.manual_seed(0)
    assert backbone_kind(str(tiny_model_dir)) == "decoder"
    model = build_reward_model(str(tiny_model_dir), RewardSpec("decoder")).eval()
    tok, pairs = tokenized_pairs(tiny_model_dir)
    padded = collate_pairs(pairs, list(range(len(pairs))), tok.pad_id)
    with torch.no_grad():
        right = model(padded.tokens)
        left = model(left_padded(padded.tokens))
        packed = model(collate_pairs(pairs, list(range(len(pairs))), tok.pad_id, packed=True, capacity=64).tokens)
        # the same sequence alone, unpadded
        ids = padded.tokens.input_ids[0, : int(padded.tokens.attention_mask[0].sum())][None]
        alone = model(TokenBatch(ids, torch.ones_like(ids), torch.ones_like(ids)))
    torch.testing.assert_close(left, right, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed, right, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone[0], right[0], rtol=1e-5, atol=1e-5)
    assert right.shape == (16, 1) and right.std() > 0


def test_a_saved_reward_model_scores_the_same_after_loading(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    model = build_reward_model(str(tiny_model_dir), RewardSpec("decoder", objectives=["a", "b"])).eval()
    tok, pairs = tokenized_pairs(tiny_model_dir)
    batch = collate_pairs(pairs, list(range(len(pairs))), tok.pad_id)
    model.save(tmp_path / "rm")
    assert not list((tmp_path / "rm").rglob("*.bin")) and not list((tmp_path / "rm").rglob("*.pt"))
    loaded = load_reward_model(tmp_path / "rm")
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch.tokens), model(batch.tokens))
    assert loaded.spec.objectives == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="no reward_config.json"):
        load_reward_model(tmp_path)


# -- training on the toy task -------------------------------------------------------------------------------

def rm_config(model_dir, train, held, out, steps=150, lr=3e-4, **reward):
    return RewardTrainConfig(
        model=ModelConfig(name_or_path=str(model_dir)),
        data=DataConfig(train=str(train), eval=str(held), max_length=96),
        reward=RewardConfig(**reward),
        trainer=TrainerConfig(output_dir=str(out), max_steps=steps, batch_size=16, lr=lr, schedule="constant",
                              progress=False, seed=0))


@pytest.fixture(scope="module")
def toy_rm_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy-rm")
    return (write_jsonl(root / "train.jsonl", toy_reward_rows(800, seed=0)),
            write_jsonl(root / "held.jsonl", toy_reward_rows(300, seed=1, held_out=True)))


def test_bradley_terry_on_the_toy_base_beats_chance_on_held_out_gold_labels(toy_rm_data, tmp_path):
    """The toy base as backbone, 150 steps of 16 pairs: held-out accuracy against the gold order (0.77 at
    seed 0; chance is 0.5)."""
    train, held = toy_rm_data
    run = train_reward_model(rm_config("toy", train, held, tmp_path / "bt", center=0.01))
    assert run.eval["held_out_accuracy"] > 0.7
    summary = json.loads((tmp_path / "bt" / "summary.json").read_text())
    assert summary["held_out_accuracy"] == run.eval["held_out_accuracy"] and 0 <= summary["held_out_ece"] < 0.5
    assert (run.model_dir / "reward_config.json").exists()


def test_multi_objective_heads_learn_their_own_objectives(toy_rm_data, tmp_path):
    """One head per column; each, scored alone (weight vector e_k), orders the held-out pairs by its own
    objective."""
    from prefalign.rewards.evaluate import score_with_reward_model

    train, held = toy_rm_data
    run = train_reward_model(rm_config("toy", train, held, tmp_path / "mo", objectives=["quality", "brevity"]))
    rows = [json.loads(line) for line in open(held)]
    for k, name in enumerate(["quality", "brevity"]):
        weights = [1.0 if j == k else 0.0 for j in range(2)]
        margins = score_with_reward_model(str(run.model_dir), str(held), 96, weights=weights).margins
        labels = np.array([r[name] for r in rows], dtype=float)
        on = labels != 0
        assert pair_accuracy(margins[on] * labels[on]) > 0.75, name


# -- ensembles and weight averaging ---------------------------------------------------------------------------

def test_ensemble_reductions_by_hand():
    from prefalign.rewards.ensemble import combine_rewards

    r = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]])
    assert combine_rewards(r, "mean").tolist() == pytest.approx([2.0, 1.0])
    assert combine_rewards(r, "min").tolist() == [1.0, 0.0]
    assert combine_rewards(r, "mean_minus_std", k=0.5).tolist() == pytest.approx([2.0 - 0.5, 1.0 - 0.5 * math.sqrt(3)])
    with pytest.raises(ValueError, match="unknown ensemble reduction"):
        combine_rewards(r, "median")


def test_warm_averages_every_weight_and_refuses_other_architectures(tiny_model_dir):
    from prefalign.rewards.ensemble import average_weights

    torch.manual_seed(0)
    members = [build_reward_model(str(tiny_model_dir), RewardSpec("decoder")) for _ in range(3)]
    for i, m in enumerate(members):  # different fine-tunes of one initialisation
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * (i + 1))
    warm = average_weights(members)
    for name, p in warm.named_parameters():
        expected = torch.stack([dict(m.named_parameters())[name] for m in members]).mean(0)
        torch.testing.assert_close(p, expected)
    with pytest.raises(ValueError, match="not have the architecture"):
        average_weights([members[0], build_reward_model(str(tiny_model_dir), RewardSpec("decoder", objectives=["a", "b"]))])
    with pytest.raises(ValueError, match="another spec"):
        average_weights([members[0], build_reward_model(str(tiny_model_dir), RewardSpec("decoder", objectives=["other"]))])


# -- beyond Bradley-Terry: cycles and several users ------------------------------------------------------------

def cyclic_rows(items=("phone", "lamp", "chair", "table", "book", "camera", "bike")):
    """A rotational tournament: item i beats the next three items around the circle, loses to the three before.
    Every item wins exactly half its comparisons, so the best scalar reward is a constant."""
    n = len(items)
    return [{"prompt": "review the red watch .", "chosen": f" the {items[i]} .", "rejected": f" the {items[(i + d) % n]} ."}
            for i in range(n) for d in (1, 2, 3)]


def test_gpm_fits_intransitive_preferences_where_bradley_terry_stays_at_chance(tmp_path):
    from prefalign.rewards.evaluate import score_with_reward_model

    data = write_jsonl(tmp_path / "cycle.jsonl", cyclic_rows() * 4)
    results = {}
    for head in ("scalar", "gpm"):
        cfg = rm_config("toy", data, data, tmp_path / head, steps=300, lr=1e-4, head=head, dim=8)
        run = train_reward_model(cfg)
        margins = score_with_reward_model(str(run.model_dir), str(data), 96).margins[:21]  # the 21 distinct pairs
        results[head] = (pair_accuracy(margins), float(np.mean(np.log(1 / (1 + np.exp(-margins))))))
    (bt_acc, bt_loglik), (gpm_acc, gpm_loglik) = results["scalar"], results["gpm"]
    assert bt_loglik <= math.log(0.5) + 0.02  # no scalar reward does better than a coin on a balanced cycle
    assert gpm_acc == 1.0 and gpm_loglik > math.log(0.8)
    assert bt_acc < 0.8  # at most a partial order's worth of the 21 pairs


def test_pal_fits_two_kinds_of_users_and_adapts_to_a_new_one_from_a_few_comparisons(tmp_path):
    """Users who like short answers and users who like long ones: ideal points fit both; a newcomer who likes
    short answers is placed from 16 of their comparisons."""
    from prefalign.rewards.evaluate import pair_batches
    from prefalign.rewards.pal import adapt_new_user
    from prefalign.rewards.scoring import load_reward_tokenizer

    train = write_jsonl(tmp_path / "train.jsonl", toy_reward_rows(800, seed=0, users=("brief", "verbose")))
    held_rows = toy_reward_rows(300, seed=1, held_out=True, users=("brief", "verbose"))
    held = write_jsonl(tmp_path / "held.jsonl", held_rows)
    pal = train_reward_model(rm_config("toy", train, held, tmp_path / "pal", head="pal", dim=8, prototypes=2))
    bt = train_reward_model(rm_config("toy", train, held, tmp_path / "bt"))
    # brief and verbose users disagree on every pair: one reward serves neither (0.49 at seed 0), ideal
    # points serve both (0.90)
    assert pal.eval["held_out_accuracy"] > 0.8
    assert bt.eval["held_out_accuracy"] < 0.6

    # a new user who likes short answers: 16 of their comparisons fit 2 mixture weights
    model = load_reward_model(pal.model_dir)
    tok = load_reward_tokenizer(str(pal.model_dir), 96)
    new_rows = [dict(r, user="newcomer") for r in toy_reward_rows(120, seed=3, held_out=True, users=("brief",))]
    path = write_jsonl(tmp_path / "new.jsonl", new_rows)
    pairs, (batch,) = pair_batches(str(path), tok, tok.pad_id, batch_size=len(new_rows))
    with torch.no_grad():
        out = model(batch.tokens)
    chosen, rejected = out[:len(pairs)], out[len(pairs):]
    logits = adapt_new_user(model.ideal_points, chosen[:16], rejected[:16])
    ideal = logits.softmax(-1) @ model.ideal_points.prototypes.detach()
    margins = ((rejected[16:] - ideal) ** 2).sum(-1) - ((chosen[16:] - ideal) ** 2).sum(-1)
    assert pair_accuracy(margins.numpy()) > 0.8
