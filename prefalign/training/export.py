"""The run's outputs: a model folder `from_pretrained` loads as is, an adapter folder for LoRA runs, the
tokenizer and the resolved config. Each folder is written under a temporary name and renamed when complete."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
import yaml

from prefalign.atomic_files import replace_dir, write_text_atomic


def save_pretrained_atomic(model: torch.nn.Module, tokenizer: object, out: Path, config: dict | None = None) -> Path:
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if config is not None:
        (tmp / "prefalign_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    replace_dir(tmp, out)
    return out


def export_run(model: torch.nn.Module, tokenizer: object, run_dir: Path, config: dict) -> dict[str, Path]:
    """`model/` always (a LoRA policy is merged into a copy of its base); `adapter/` too for LoRA runs."""
    outputs = {}
    if hasattr(model, "peft_config"):
        outputs["adapter"] = save_pretrained_atomic(model, tokenizer, run_dir / "adapter", config)
        quantized = (config or {}).get("model", {}).get("quantization") is not None
        merged = merged_into_full_precision(outputs["adapter"], config["model"]) if quantized \
            else copy.deepcopy(model).merge_and_unload()
        outputs["model"] = save_pretrained_atomic(merged, tokenizer, run_dir / "model", config)
    else:
        outputs["model"] = save_pretrained_atomic(model, tokenizer, run_dir / "model", config)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return outputs


def merged_into_full_precision(adapter_dir: Path, model_config: dict) -> torch.nn.Module:
    """A QLoRA adapter merged into its base loaded again at full precision (model.dtype) on the CPU: merging
    into the 4-bit weights would round the merged model to 4 bits. The adapter's weights are read from its
    safetensors file into a fresh adapter of the same settings (no `from_pretrained`, no pickle)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from prefalign.config.schema import ModelConfig
    from prefalign.models.loading import load_policy

    adapted = load_policy(ModelConfig.model_validate({**model_config, "quantization": None,
                                                      "gradient_checkpointing": False}))
    set_peft_model_state_dict(adapted, load_file(Path(adapter_dir) / "adapter_model.safetensors"))
    return adapted.merge_and_unload()
