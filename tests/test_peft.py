"""PEFT variants through peft: DoRA and rank-stabilised LoRA train, export, and merge like plain LoRA."""

import warnings

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


def test_ia3_trains_with_the_disabled_adapter_as_reference_and_merges_on_export(tiny_model_dir, pairs_file, tmp_path):
    from peft import PeftModel
    from peft.tuners.ia3 import IA3Layer

    from prefalign.models.loading import load_policy
    from prefalign.training.metrics import read_metrics

    model_cfg = ModelConfig(name_or_path=str(tiny_model_dir), ia3={})
    policy = load_policy(model_cfg)
    layers = [m for m in policy.modules() if isinstance(m, IA3Layer)]
    assert layers, "peft's default IA3 modules for Llama (k_proj, v_proj, down_proj)"
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    assert 0 < trainable < 0.05 * sum(p.numel() for p in policy.parameters())
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "ia3", max_steps=5, lr=5e-2, batch_size=8)
    cfg.model = model_cfg
    run = train_preference(cfg)
    metrics = read_metrics(run.run_dir)
    assert metrics[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # IA3 starts at the identity
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_logits = base(ids).logits
    adapted = PeftModel.from_pretrained(base, run.outputs["adapter"])
    merged = AutoModelForCausalLM.from_pretrained(run.outputs["model"])
    torch.testing.assert_close(adapted(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(merged(ids).logits, base_logits)


def test_one_adapter_per_policy():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="one adapter"):
        ModelConfig(lora={}, ia3={})


def test_wrapping_in_an_adapter_warns_of_nothing(tiny_model_dir):
    # peft 0.21 reads transformers' deprecated is_gradient_checkpointing; the user cannot act on that warning
    from prefalign.config.schema import IA3Settings
    from prefalign.models.loading import add_ia3

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        add_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraSettings(r=4, alpha=8))
        add_ia3(AutoModelForCausalLM.from_pretrained(tiny_model_dir), IA3Settings(target_modules=["q_proj", "down_proj"],
                                                                                  feedforward_modules=["down_proj"]))


def test_qlora_needs_lora_and_cuda_and_says_what_it_would_load(monkeypatch):
    import importlib.util

    from prefalign.config.schema import QuantizationSettings
    from prefalign.models.loading import quantized_loading

    with pytest.raises(ValueError, match="set model.lora too"):
        ModelConfig(quantization={"bits": 4})
    q = QuantizationSettings()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        quantized_loading(q)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else real_find_spec(name))
    with pytest.raises(ValueError, match=r"prefalign\[qlora\]"):
        quantized_loading(q)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    kwargs = quantized_loading(q)
    config = kwargs["quantization_config"]
    assert (config.load_in_4bit, config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant,
            config.bnb_4bit_compute_dtype) == (True, "nf4", True, torch.bfloat16)
    assert kwargs["device_map"] == {"": 3}  # each process's own GPU


def test_a_qlora_adapter_is_merged_into_the_base_reloaded_at_full_precision(tiny_model_dir, pairs_file, tmp_path):
    # The export path QLoRA runs take, on a LoRA run: the same merged weights as merging the trained model itself
    from safetensors.torch import load_file

    from prefalign.training.export import merged_into_full_precision

    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "lora", max_steps=2, lr=1e-2)
    cfg.model = ModelConfig(name_or_path=str(tiny_model_dir), lora={"r": 4, "alpha": 8})
    run = train_preference(cfg)
    merged = merged_into_full_precision(run.outputs["adapter"], cfg.model.model_dump(mode="json")).state_dict()
    exported = load_file(run.outputs["model"] / "model.safetensors")
    assert exported.keys() <= merged.keys()
    for name, tensor in exported.items():
        torch.testing.assert_close(merged[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
