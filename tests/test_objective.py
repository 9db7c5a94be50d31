"""The preference objective computes what the chosen losses need, through a real (tiny) model."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.config import DataConfig, LossTerm, ReferenceConfig
from prefalign.data.collate import collate_pairs
from prefalign.data.errors import DataError
from prefalign.losses import build_losses
from prefalign.models.reference import FrozenCopyReference
from prefalign.training.checkpoint import list_checkpoints
from prefalign.training.objectives import PairObjective
from prefalign.training.preference import prepare_data, train_preference

from .conftest import write_jsonl
from .test_training import assert_resume_is_exact, make_config


@pytest.fixture
def setup(tiny_model_dir, pairs_file):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = prepare_data(DataConfig(train=str(pairs_file), eval_fraction=0), tok, 0).train
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model, collate_pairs(pairs[:3], [0, 1, 2], tok.pad_token_id)


def test_only_needed_quantities_are_computed(setup):
    model, batch = setup
    ref = FrozenCopyReference(AutoModelForCausalLM.from_pretrained(model.name_or_path))
    plain = PairObjective(build_losses([LossTerm(name="dpo")]), ref).pair_logps(model, batch)
    assert plain.chosen_token_logps is None and plain.wpo_chosen is None
    rich = PairObjective(build_losses([LossTerm(name="ld_dpo"), LossTerm(name="wpo")]), ref).pair_logps(model, batch)
    assert rich.chosen_token_logps is not None and rich.ref_rejected_token_logps is not None
    torch.testing.assert_close(rich.chosen_token_logps.sum(-1), rich.chosen)
    torch.testing.assert_close(rich.chosen_mask.sum(-1), rich.chosen_tokens)


def test_wpo_statistic_matches_its_definition(setup):
    model, batch = setup
    objective = PairObjective(build_losses([LossTerm(name="wpo")]), FrozenCopyReference.copy_of(model))
    lp = objective.pair_logps(model, batch)
    with torch.no_grad():
        logits = model(input_ids=batch.tokens.input_ids, attention_mask=batch.tokens.attention_mask).logits[:, :-1]
        probs = logits.float().softmax(-1)
        picked = probs.gather(-1, batch.tokens.input_ids[:, 1:, None]).squeeze(-1)
        mask = batch.tokens.completion_mask[:, 1:].float()
        expected = ((picked.log() - (probs ** 2).sum(-1).log()) * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(torch.cat([lp.wpo_chosen, lp.wpo_rejected]), expected, rtol=1e-4, atol=1e-5)


def test_missing_column_fails_before_training(tiny_model_dir, pairs_file, tmp_path):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "r")
    cfg.loss = [LossTerm(name="margin_weighted_dpo", column="margin")]
    with pytest.raises(DataError, match=r"pairs.jsonl, line \d+, field 'margin': loss 'margin_weighted_dpo' needs"):
        train_preference(cfg)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_column_reaches_the_loss(tiny_model_dir, pairs_file, tmp_path):
    rows = [line for line in pairs_file.read_text().splitlines()]
    import json

    data = write_jsonl(tmp_path / "m.jsonl", [json.loads(r) | {"margin": i / 4} for i, r in enumerate(rows)])
    cfg = make_config(tiny_model_dir, data, tmp_path / "r", max_steps=2)
    cfg.loss = [LossTerm(name="margin_weighted_dpo", column="margin")]
    run = train_preference(cfg)
    assert run.loop.steps == 2


def test_precomputed_reference_refuses_token_level_losses(tiny_model_dir, pairs_file, tmp_path):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "r")
    cfg.loss = [LossTerm(name="ld_dpo")]
    cfg.reference = ReferenceConfig(kind="precomputed")
    with pytest.raises(ValueError, match="per-token"):
        train_preference(cfg)


def test_stateful_loss_resumes_exactly(tiny_model_dir, pairs_file, tmp_path):
    def cfg(out):
        c = make_config(tiny_model_dir, pairs_file, out, save_every=3)
        c.loss = [LossTerm(name="bco", beta=0.5)]
        return c

    def bco_state_saved(run_dir):
        state = json.loads((list_checkpoints(run_dir / "checkpoints")[-1] / "state.json").read_text())
        assert state["objective"]["0"]["count"] == 3 * 2 * 2  # 3 steps of 2 pairs, 2 rewards each

    assert_resume_is_exact(cfg, tmp_path, train_preference(cfg(tmp_path / "straight")), check_interrupted=bco_state_saved)
