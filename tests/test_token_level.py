"""TDPO and SparsePO against hand-computed values, the token-level KL against torch.distributions, and
SparsePO's learned mask trained, checkpointed and resumed."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.config import LossTerm
from prefalign.data.collate import collate_pairs
from prefalign.losses import PairLogps, build_losses
from prefalign.losses.token_level import LearnedTokenMask, reference_activation_mask
from prefalign.models.logprobs import sequence_logps
from prefalign.training.metrics import read_metrics
from prefalign.training.preference import prepare_data, train_preference

from .test_loss_family import TinyPolicy, logsig, pair, run, val
from .test_training import assert_resume_is_exact, make_config


def kl_pair(**extra):
    # h = 1.5 (see pair()); sum KL: chosen 0.3, rejected 0.5
    return pair(chosen_token_kl=torch.tensor([[0.2, 0.1]]), rejected_token_kl=torch.tensor([[0.5, 0.0]]), **extra)


def test_tdpo_by_hand():
    assert val("tdpo", kl_pair(), beta=0.1, variant=1) == pytest.approx(-logsig(0.1 * (1.5 - (0.5 - 0.3))), rel=1e-6)
    assert val("tdpo", kl_pair(), beta=0.1, variant=2, alpha=0.5) == pytest.approx(-logsig(0.1 * (1.5 - 0.5 * 0.2)), rel=1e-6)


def test_tdpo2_stops_the_gradient_through_the_chosen_kl():
    for variant, expect_grad in ((1, True), (2, False)):
        kl_w = torch.tensor([[0.2, 0.1]], requires_grad=True)
        kl_l = torch.tensor([[0.5, 0.0]], requires_grad=True)
        loss = run("tdpo", pair(chosen_token_kl=kl_w, rejected_token_kl=kl_l), variant=variant)
        loss.sum().backward()
        assert kl_l.grad.abs().sum() > 0
        assert (kl_w.grad is not None and kl_w.grad.abs().sum() > 0) == expect_grad


def test_token_kl_matches_torch_distributions(tiny_model_dir, pairs_file):
    from prefalign.config import DataConfig

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = prepare_data(DataConfig(train=str(pairs_file), eval_fraction=0.0, max_length=64), tok, 0).train
    batch = collate_pairs(pairs[:3], [0, 1, 2], tok.pad_token_id).tokens
    torch.manual_seed(1)
    policy, reference = (AutoModelForCausalLM.from_pretrained(tiny_model_dir) for _ in range(2))
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref = sequence_logps(reference, batch, keep_vocab=True, keep_hidden=True)
    out = sequence_logps(policy, batch, kl_from=ref)
    with torch.no_grad():
        p_logits = policy(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        r_logits = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    expected = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=r_logits),
                                                 torch.distributions.Categorical(logits=p_logits))
    expected = expected * batch.completion_mask[:, 1:]
    torch.testing.assert_close(out.token_kl.detach(), expected, rtol=1e-4, atol=1e-6)
    assert out.token_kl.requires_grad
    n_layers = reference.config.num_hidden_layers
    assert ref.hidden.shape == (n_layers, 6, batch.input_ids.shape[1] - 1, reference.config.hidden_size)


def test_reference_activation_mask_by_hand():
    # one layer, one row, hidden means 1, 2, 4 on the completion and a padded position: min-max of z = (x-1)/3
    hidden = torch.tensor([[[[1.0, 1.0], [1.0, 3.0], [4.0, 4.0], [9.0, 9.0]]]])
    on = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(reference_activation_mask(hidden, on), torch.tensor([[0.0, 1 / 3, 1.0, 0.0]]))


def sparse_pair(**extra):
    on = torch.tensor([[1.0, 1.0, 1.0]])
    hidden = dict(ref_chosen_hidden=torch.tensor([[[[1.0], [2.0], [4.0]]]]),  # mask (0, 1/3, 1)
                  ref_rejected_hidden=torch.tensor([[[[3.0], [1.0], [2.0]]]]))  # mask (1, 0, 1/2)
    return pair(chosen_token_logps=torch.tensor([[-0.5, -0.25, -0.25]]), rejected_token_logps=torch.tensor([[-1.0, -1.0, -1.0]]),
                ref_chosen_token_logps=torch.tensor([[-1.0, -0.5, -0.5]]), ref_rejected_token_logps=torch.tensor([[-1.0, -0.5, -1.0]]),
                chosen_mask=on, rejected_mask=on, chosen_token_kl=torch.tensor([[0.1, 0.2, 0.0]]),
                rejected_token_kl=torch.tensor([[0.3, 0.0, 0.3]]), **(hidden | extra))


def test_sparsepo_reference_mask_by_hand():
    # r_w = (0.5, 0.25, 0.25), r_l = (0, -0.5, 0); masks m_w = (0, 1/3, 1), m_l = (1, 0, 1/2)
    u = (0.25 / 3 + 0.25) - 0.0
    delta = (1 * 0.3 + 0.5 * 0.3) - (0.2 / 3)
    got = val("sparsepo", sparse_pair(), beta=0.5, mask="reference")
    assert got == pytest.approx(-logsig(0.5 * (u - delta)), rel=1e-5)


def test_sparsepo_without_masks_is_tdpo1():
    lp = sparse_pair()
    plain = val("sparsepo", lp, beta=0.5, mask="reference", mask_reward=False, mask_kl=False)
    assert plain == pytest.approx(val("tdpo", lp, beta=0.5, variant=1), rel=1e-6)


def test_learned_mask_starts_near_ones_trains_and_pays_its_l1():
    torch.manual_seed(0)
    head = LearnedTokenMask(hidden=4, layers=2, dropout=0.1).eval()
    mask = head(torch.randn(2, 3, 5, 4))
    assert mask.shape == (3, 5) and ((mask - 1).abs() < 0.2).all()
    lp = sparse_pair(ref_chosen_hidden=torch.randn(2, 1, 3, 8), ref_rejected_hidden=torch.randn(2, 1, 3, 8))
    losses = {}
    for l1 in (0.0, 0.01):
        torch.manual_seed(0)  # the same head both times
        (loss,) = build_losses([LossTerm(name="sparsepo", beta=0.5, dropout=0.0, l1_reward=l1, independent=True)])
        module = loss.build_module(TinyPolicy())
        losses[l1] = loss(lp)
    assert set(module) == {"reward", "kl"}
    masks_sum = sum(module["reward"](h).sum().item() for h in (lp.ref_chosen_hidden, lp.ref_rejected_hidden))
    assert losses[0.01].metrics["sparsepo/reward_mask_mean"].item() == pytest.approx(masks_sum / 6, rel=1e-5)
    assert losses[0.01].loss.item() == pytest.approx(losses[0.0].loss.item() + 0.01 * masks_sum, rel=1e-5)
    losses[0.01].loss.sum().backward()
    assert all(p.grad is not None for p in module.parameters())


def test_sparsepo_learned_mask_trains_checkpoints_and_resumes(tiny_model_dir, pairs_file, tmp_path):
    def cfg(out):
        c = make_config(tiny_model_dir, pairs_file, out, save_every=3, lr=1e-2)
        c.loss = [LossTerm(name="sparsepo", beta=0.5, l1_reward=0.001)]
        return c

    straight = train_preference(cfg(tmp_path / "straight"))
    ckpt = straight.run_dir / "checkpoints" / "step-00000006" / "loss_modules.safetensors"
    heads = load_file(ckpt)
    assert any(k.startswith("0.common.per_layer") for k in heads)
    assert not torch.equal(heads["0.common.mixer.weight"], torch.full_like(heads["0.common.mixer.weight"], 0.5))
    assert_resume_is_exact(cfg, tmp_path, straight)


def test_tdpo_trains_end_to_end_and_refuses_a_precomputed_reference(tiny_model_dir, pairs_file, tmp_path):
    from prefalign.config import ReferenceConfig

    c = make_config(tiny_model_dir, pairs_file, tmp_path / "t")
    c.loss = [LossTerm(name="tdpo")]
    metrics = read_metrics(train_preference(c).run_dir)
    assert metrics[-1]["tdpo/seq_kl_chosen"] > 0  # the policy has moved away from the reference
    c.reference = ReferenceConfig(kind="precomputed")
    c.trainer.output_dir = str(tmp_path / "t2")
    with pytest.raises(ValueError, match="KL"):
        train_preference(c)


def test_token_level_pair_logps_split_hidden_on_the_row_axis():
    from prefalign.models.logprobs import SequenceLogps

    ref = SequenceLogps(torch.zeros(4), torch.ones(4), hidden=torch.arange(2 * 4 * 3 * 1.0).view(2, 4, 3, 1))
    lp = PairLogps.from_outputs(SequenceLogps(torch.zeros(4), torch.ones(4), token_kl=torch.ones(4, 3)), ref, 2)
    assert lp.ref_chosen_hidden.shape == (2, 2, 3, 1) and lp.chosen_token_kl.shape == (2, 3)
    torch.testing.assert_close(lp.ref_rejected_hidden, ref.hidden[:, 2:])
