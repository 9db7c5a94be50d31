"""Losses that couple a step's examples (KTO's z0, beta-DPO's batch beta, AOT's sort, BCO's baseline) give
the same loss, gradient and running state however the step is split into micro-batches and processes."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.config import LossTerm
from prefalign.data.collate import collate_pairs, collate_unpaired, mismatch_partners
from prefalign.losses import build_losses
from prefalign.models.reference import FrozenCopyReference
from prefalign.training.batch_sources import StepBatches
from prefalign.training.loop import accumulate_gradients
from prefalign.training.objectives import PairObjective, UnpairedObjective
from prefalign.training.preference import prepare_data

from .test_training import make_config

SPLITS = [[list(range(8))], [[0, 1], [2, 3], [4, 5], [6, 7]], [[0, 1, 2], [3, 4, 5, 6], [7]]]


def _perturbed(model_dir):
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.train()  # training mode: stateful losses update their statistics


def _step(model, objective, batches):
    model.zero_grad()
    torch.manual_seed(7)  # beta-DPO's filter draws at random: the same draw for every split
    loss, parts, _ = accumulate_gradients(model, objective, StepBatches(batches))
    return loss, {n: p.grad.clone() for n, p in model.named_parameters()}, parts


def _assert_split_invariant(model, make_objective, collate):
    results = []
    for groups in SPLITS:
        objective = make_objective()
        loss, grads, parts = _step(model, objective, [collate(g) for g in groups])
        results.append((loss, grads, objective.state_dict()))
    (loss0, grads0, state0) = results[0]
    for loss, grads, state in results[1:]:
        assert loss == pytest.approx(loss0, abs=1e-6)
        assert state.keys() == state0.keys()
        for term in state0:  # BCO's and beta-DPO's running statistics, updated once per step
            assert state[term] == pytest.approx(state0[term], abs=1e-6)
        for name in grads0:
            torch.testing.assert_close(grads[name], grads0[name], rtol=1e-4, atol=1e-6, msg=name)
    return results


@pytest.mark.parametrize("loss", [{"name": "aot", "beta": 0.5}, {"name": "aot", "beta": 0.5, "paired": False},
                                  {"name": "beta_dpo", "beta": 0.5, "filter_ratio": 0.25},
                                  {"name": "bco", "beta": 0.5}])
def test_pairwise_coupled_losses_do_not_depend_on_the_split(tiny_model_dir, pairs_file, loss):
    cfg = make_config(tiny_model_dir, pairs_file, "unused")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = prepare_data(cfg.data, tok, 0).train
    reference = FrozenCopyReference(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    results = _assert_split_invariant(
        _perturbed(tiny_model_dir), lambda: PairObjective(build_losses([LossTerm(**loss)]), reference),
        lambda g: collate_pairs([pairs[i] for i in g], g, tok.pad_token_id))
    assert any(g.abs().sum() > 0 for g in results[0][1].values())


def test_kto_z0_comes_from_the_whole_step_and_its_pairing_from_the_index(tiny_model_dir, pairs_file):
    cfg = make_config(tiny_model_dir, pairs_file, "unused")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = prepare_data(cfg.data, tok, 0, "unpaired").train[:8]
    partners = mismatch_partners([len(examples)], seed=0)
    reference = FrozenCopyReference(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    model = _perturbed(tiny_model_dir)
    results = _assert_split_invariant(
        model, lambda: UnpairedObjective(build_losses([LossTerm(name="kto", beta=0.5)]), reference),
        lambda g: collate_unpaired([examples[i] for i in g], g, tok.pad_token_id, pool=examples, partners=partners))
    # Against the formula: z0 = max(0, mean over the 8 mismatched rows of log pi - log pi_ref), no gradient.
    objective = UnpairedObjective(build_losses([LossTerm(name="kto", beta=0.5)]), reference)
    logps = objective.inputs(model, collate_unpaired(examples, list(range(8)), tok.pad_token_id, pool=examples,
                                                     partners=partners))
    z0 = (logps.kl_logps - logps.kl_ref).mean().clamp(min=0)
    d = logps.logps - logps.ref
    expected = torch.where(logps.labels, 1 - torch.sigmoid(0.5 * (d - z0)), 1 - torch.sigmoid(0.5 * (z0 - d)))
    assert results[1][0] == pytest.approx(expected.mean().item(), abs=1e-6)


def test_mismatch_partners_are_a_derangement_within_each_segment():
    partners = mismatch_partners([6, 3], seed=4)
    assert sorted(partners[:6]) == list(range(6)) and sorted(partners[6:]) == [6, 7, 8]
    assert all(p != i for i, p in enumerate(partners))
    assert mismatch_partners([6, 3], seed=4) == partners


def test_a_coupled_loss_with_a_token_level_term_is_refused():
    with pytest.raises(ValueError, match="couples the batch"):
        PairObjective(build_losses([LossTerm(name="aot"), LossTerm(name="tdpo")]), None)
