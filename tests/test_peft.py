"""PEFT variants through peft: DoRA and rank-stabilised LoRA train, export, and merge like plain LoRA."""

import pytest
import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from prefalign.config import LoraSettings, ModelConfig
from prefalign.models.loading import add_lora
from prefalign.training.preference import train_preference

from .test_training import make_config


def test_rslora_scales_by_alpha_over_sqrt_r(tiny_model_dir):
    # alpha 8, r 4: LoRA scales the update by 8 / 4 = 2, rsLoRA by 8 / sqrt(4) = 4.
    for rs, expected in ((False, 2.0), (True, 4.0)):
        model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                         LoraSettings(r=4, alpha=8, use_rslora=rs))
        layer = next(m for m in model.modules() if isinstance(m, LoraLayer))
        assert layer.scaling["default"] == pytest.approx(expected)


def test_dora_trains_and_its_merged_export_equals_the_adapter(tiny_model_dir, pairs_file, tmp_path):
    from peft import PeftModel

    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "dora", max_steps=3, lr=1e-2)
    cfg.model = ModelConfig(name_or_path=str(tiny_model_dir), lora={"r": 4, "alpha": 8, "use_dora": True})
    run = train_preference(cfg)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    base_logits = base(ids).logits
    adapted = PeftModel.from_pretrained(base, run.outputs["adapter"])
    assert any("lora_magnitude_vector" in n for n, _ in adapted.named_parameters())
    merged = AutoModelForCausalLM.from_pretrained(run.outputs["model"])
    torch.testing.assert_close(adapted(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(merged(ids).logits, base_logits)
