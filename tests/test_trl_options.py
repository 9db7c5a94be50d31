"""The options TRL users look for, against hand-computed values: label smoothing and AlphaPO's reward shape
in SimPO, the reference-free hinge / IPO / AlphaPO forms of CPO, the NLL term's normalisation in every loss
that has one, and KTO-style data with APO-zero (no KL rows)."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.config import LossTerm
from prefalign.data.collate import collate_pairs, collate_unpaired
from prefalign.losses import build_losses
from prefalign.losses.inputs import ListLogps, PairLogps, UnpairedLogps
from prefalign.models.reference import FrozenCopyReference
from prefalign.training.loop import evaluate
from prefalign.training.metrics import read_metrics
from prefalign.training.objectives import PairObjective, UnpairedObjective
from prefalign.training.preference import prepare_data, train_preference

from .test_coupled import _assert_split_invariant, _perturbed
from .test_training import make_config


def sig(x):
    return 1 / (1 + math.exp(-x))


def run(name, inputs, **params):
    (loss,) = build_losses([LossTerm(name=name, **params)])
    return loss(inputs).loss


def pair():
    # sums -1 and -3 over 2 and 5 tokens: averages -0.5 and -0.6
    return PairLogps(chosen=torch.tensor([-1.0]), rejected=torch.tensor([-3.0]), chosen_tokens=torch.tensor([2.0]),
                     rejected_tokens=torch.tensor([5.0]))


def shaped(s, a):
    return (1 - math.exp(-a * s)) / a


def test_simpo_label_smoothing_and_alphapo_by_hand():
    z = 2.0 * (-0.5 + 0.6) - 1.0
    assert run("simpo", pair(), label_smoothing=0.1).item() == pytest.approx(
        -0.9 * math.log(sig(z)) - 0.1 * math.log(sig(-z)), rel=1e-6)
    z = 2.0 * (shaped(-0.5, 0.25) - shaped(-0.6, 0.25)) - 1.0
    assert run("simpo", pair(), alpha=0.25).item() == pytest.approx(-math.log(sig(z)), rel=1e-6)
    # the shape tends to the log-prob itself: AlphaPO -> SimPO as alpha -> 0
    assert run("simpo", pair(), alpha=1e-6).item() == pytest.approx(run("simpo", pair()).item(), rel=1e-5)
    # `alphapo` is SimPO with alpha at the paper's settings (a 0.25, b 2.5, g 0.1)
    z = 2.5 * (shaped(-0.5, 0.25) - shaped(-0.6, 0.25)) - 0.1
    assert run("alphapo", pair()).item() == pytest.approx(-math.log(sig(z)), rel=1e-6)


def test_cpo_reference_free_family_by_hand():
    nll = 1.0 / 2
    assert run("cpo", pair(), beta=0.5).item() == pytest.approx(-math.log(sig(0.5 * 2.0)) + nll, rel=1e-6)
    assert run("cpo", pair(), beta=0.25, loss_type="hinge").item() == pytest.approx(1 - 0.25 * 2.0 + nll, rel=1e-6)
    # IPO on mean token log-probs, as TRL's CPO takes it: (m - 1/(2b))^2 with m = -0.5 - (-0.6)
    assert run("cpo", pair(), beta=0.5, loss_type="ipo", alpha=0.0).item() == pytest.approx((0.1 - 1.0) ** 2, rel=1e-5)
    m = shaped(-1.0, 0.5) - shaped(-3.0, 0.5)
    assert run("cpo", pair(), beta=0.1, reward_alpha=0.5, alpha=0.0, label_smoothing=0.2).item() == pytest.approx(
        -0.8 * math.log(sig(0.1 * m)) - 0.2 * math.log(sig(-0.1 * m)), rel=1e-6)
    with pytest.raises(ValueError, match="label_smoothing applies to loss_type 'sigmoid' only"):
        run("cpo", pair(), loss_type="hinge", label_smoothing=0.1)


def two_pairs():
    # chosen sums -2 over 1 token and -6 over 3 tokens
    return PairLogps(chosen=torch.tensor([-2.0, -6.0]), rejected=torch.tensor([-3.0, -7.0]),
                     chosen_tokens=torch.tensor([1.0, 3.0]), rejected_tokens=torch.tensor([2.0, 2.0]))


@pytest.mark.parametrize("name, params, nll_weight", [("sft", {}, 1.0), ("cpo", {"beta": 0.1}, 1.0),
                                                      ("orpo", {}, 1.0), ("asft", {}, 1.0)])
def test_nll_token_mean_is_the_steps_summed_nll_over_its_tokens(name, params, nll_weight):
    seq = run(name, two_pairs(), **params)
    tok = run(name, two_pairs(), nll_normalize="tokens", **params)
    # per sequence: (2/1 + 6/3) / 2 = 2; token mean: (2 + 6) / (1 + 3) = 2 as a mean, but weighted by length
    assert (tok - seq).tolist() == pytest.approx([nll_weight * (2 / 2 - 2 / 1), nll_weight * (6 / 2 - 6 / 3)], abs=1e-5)
    assert tok.mean().item() - seq.mean().item() == pytest.approx(nll_weight * (8 / 4 - 2.0), abs=1e-5)
    assert run("sft", two_pairs(), nll_normalize="sum").tolist() == [2.0, 6.0]


def test_nll_normalisation_of_list_losses():
    lists = ListLogps(torch.tensor([[-2.0, -3.0], [-6.0, -7.0]]), torch.tensor([[1.0, 2.0], [3.0, 2.0]]),
                      torch.tensor([[True, True], [True, True]]))
    for name, weight in [("rrhf", {"sft_weight": 1.0}), ("pro", {"sft_weight": 1.0})]:
        diff = run(name, lists, nll_normalize="tokens", **weight) - run(name, lists, **weight)
        assert diff.tolist() == pytest.approx([2 / 2 - 2.0, 6 / 2 - 2.0], abs=1e-5)
    (term,) = build_losses([LossTerm(name="tpo", nll_normalize="tokens")])
    assert term.couples_batch and not build_losses([LossTerm(name="tpo")])[0].couples_batch


@pytest.mark.parametrize("loss", [{"name": "orpo", "nll_normalize": "tokens"},
                                  {"name": "cpo", "nll_normalize": "tokens", "beta": 0.5}])
def test_token_mean_nll_does_not_depend_on_the_split(tiny_model_dir, pairs_file, loss):
    cfg = make_config(tiny_model_dir, pairs_file, "unused")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = prepare_data(cfg.data, tok, 0).train
    model = _perturbed(tiny_model_dir)
    results = _assert_split_invariant(model, lambda: PairObjective(build_losses([LossTerm(**loss)]), None),
                                      lambda g: collate_pairs([pairs[i] for i in g], g, tok.pad_token_id))
    # and the step's loss is the token mean: sum of the chosen NLLs over all chosen tokens (plus the other term)
    with torch.no_grad():
        whole = PairObjective(build_losses([LossTerm(**loss)]), None).inputs(
            model, collate_pairs([pairs[i] for i in range(8)], list(range(8)), tok.pad_token_id))
    per_seq = {k: v for k, v in loss.items() if k not in ("name", "nll_normalize")}
    expected = run(loss["name"], whole, **per_seq).mean() + (
        -whole.chosen.sum() / whole.chosen_tokens.sum() + (whole.chosen / whole.chosen_tokens).mean())
    assert results[0][0] == pytest.approx(expected.item(), abs=1e-5)


def test_apo_zero_unpaired_by_hand():
    lp = UnpairedLogps(logps=torch.tensor([-1.0, -3.0]), n_tokens=torch.tensor([2.0, 3.0]),
                       labels=torch.tensor([True, False]), ref=torch.tensor([-2.0, -2.5]))
    out = run("apo_zero_unpaired", lp, beta=0.5, undesirable_weight=2.0)
    assert out.tolist() == pytest.approx([1 - sig(0.5 * 1.0), 2.0 * sig(0.5 * -0.5)], rel=1e-6)


def test_unpaired_batches_carry_kl_rows_only_for_losses_that_need_them(tiny_model_dir, pairs_file):
    cfg = make_config(tiny_model_dir, pairs_file, "unused")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = prepare_data(cfg.data, tok, 0, "unpaired").train[:4]
    for packed in (False, True):
        with_kl = collate_unpaired(examples, list(range(4)), tok.pad_token_id, packed=packed)
        without = collate_unpaired(examples, list(range(4)), tok.pad_token_id, packed=packed, mismatched=False)
        rows = [b.tokens.num_sequences if packed else b.tokens.input_ids.shape[0] for b in (with_kl, without)]
        assert rows == [8, 4]
    (kto,), (apo,) = build_losses([LossTerm(name="kto")]), build_losses([LossTerm(name="apo_zero_unpaired")])
    assert "kl_baseline" in kto.spec.needs and "kl_baseline" not in apo.spec.needs and not apo.couples_batch


def test_apo_zero_unpaired_trains_on_pairs_split_into_labels(tiny_model_dir, pairs_file, tmp_path):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "apo", max_steps=6, lr=5e-3)
    cfg.loss = [LossTerm(name="apo_zero_unpaired", beta=0.5)]
    run_ = train_preference(cfg)
    assert "kto/kl" not in read_metrics(run_.run_dir)[0]
    terms = build_losses([LossTerm(name="apo_zero_unpaired", beta=0.5)])
    objective = UnpairedObjective(terms, FrozenCopyReference(AutoModelForCausalLM.from_pretrained(tiny_model_dir)))
    batch = collate_unpaired(run_.data.train, list(range(16)), AutoTokenizer.from_pretrained(tiny_model_dir).pad_token_id,
                             mismatched=False)
    after = evaluate(AutoModelForCausalLM.from_pretrained(run_.outputs["model"]), objective, [batch])
    # at the reference every completion's loss is 1 - s(0) = s(0) = 0.5
    assert after["eval/loss"] < 0.5 and after["eval/rewards/desirable"] > after["eval/rewards/undesirable"]
