"""Load causal LMs and tokenizers with `from_pretrained` (hub id or local folder), optionally with LoRA."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from prefalign.config.schema import IA3Settings, LoraSettings, ModelConfig, QuantizationSettings
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model

TOY_BASE = Path(__file__).resolve().parent.parent / "toy" / "assets" / "base"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_path(name_or_path: str) -> str:
    """`toy` is the bundled toy base model; anything else goes to `from_pretrained` as it is."""
    if name_or_path == "toy":
        if not (TOY_BASE / "config.json").exists():
            raise FileNotFoundError(f"the bundled toy base is missing at {TOY_BASE}; run `prefalign toy build-base`")
        return str(TOY_BASE)
    return name_or_path


def load_tokenizer(cfg: ModelConfig) -> object:
    tok = load_pretrained_files(AutoTokenizer, resolve_path(cfg.name_or_path), revision=cfg.revision,
                                trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token_id is None:
        # Padding positions are masked out everywhere, so any token serves; EOS is the usual choice.
        tok.pad_token = tok.eos_token
    return tok


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Every dropout probability to 0: the loss then sees the function it is scored with (reference and
    policy alike), and training is cheaper (no masks kept for backward)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for name in ("attention_dropout", "dropout_prob"):  # a float that attention passes to its kernel
            if isinstance(getattr(m, name, None), float):
                setattr(m, name, 0.0)
    return model


def quantized_loading(q: QuantizationSettings) -> dict:
    """`from_pretrained` arguments for a 4-bit base on this process's GPU (QLoRA); refused without CUDA or
    bitsandbytes, which quantises on the GPU only."""
    import importlib.util

    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise ValueError("model.quantization: 4-bit loading (QLoRA) needs a CUDA GPU, and this machine has none; "
                         "remove model.quantization to train LoRA on the full-precision base")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("model.quantization: bitsandbytes is not installed (pip install 'prefalign[qlora]')")
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                                bnb_4bit_use_double_quant=q.double_quant, bnb_4bit_compute_dtype=DTYPES[q.compute_dtype])
    return {"quantization_config": config, "device_map": {"": torch.cuda.current_device()}}


def load_causal_lm(cfg: ModelConfig, name_or_path: str | None = None) -> PreTrainedModel:
    kwargs = {"dtype": DTYPES[cfg.dtype], "revision": cfg.revision}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.quantization is not None:
        kwargs |= quantized_loading(cfg.quantization)
    model = load_pretrained_model(AutoModelForCausalLM, resolve_path(name_or_path or cfg.name_or_path),
                                  trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle, **kwargs)
    if cfg.quantization is not None:
        from peft import prepare_model_for_kbit_training

        # norms and the LM head in fp32, input embeddings that require grad (for checkpointing through a
        # frozen base), as peft's QLoRA recipe does
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
        model.config.use_cache = False
    return disable_dropout(model) if cfg.disable_dropout else model


def add_lora(model: PreTrainedModel, lora: LoraSettings, task_type: str = "CAUSAL_LM") -> PreTrainedModel:
    """LoRA on `model`: CAUSAL_LM for policies; FEATURE_EXTRACTION for a decoder reward model's body (its
    head lies outside and trains in full); SEQ_CLS for an encoder classifier (peft trains its head in full)."""
    from peft import LoraConfig

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=lora.target_modules, task_type=task_type, use_dora=lora.use_dora,
                        use_rslora=lora.use_rslora)
    return wrap_in_adapter(model, config)


@contextmanager
def peft_quietly() -> Iterator[None]:
    """Without the FutureWarning that peft 0.21 triggers whenever it wraps a model, by reading transformers 5's
    deprecated `is_gradient_checkpointing` (`PeftModel.__init__`): the user can do nothing about it, so it is
    silenced, for that message only, around prefalign's calls into peft, until peft reads the new name."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def wrap_in_adapter(model: PreTrainedModel, config: object) -> PreTrainedModel:
    """peft's `get_peft_model`, quietly."""
    from peft import get_peft_model

    with peft_quietly():
        return get_peft_model(model, config)


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Activation (gradient) checkpointing, by transformers 5's name where the model has it."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def add_ia3(model: PreTrainedModel, ia3: IA3Settings) -> PreTrainedModel:
    from peft import IA3Config

    config = IA3Config(target_modules=ia3.target_modules, feedforward_modules=ia3.feedforward_modules,
                       task_type="CAUSAL_LM")
    try:
        return wrap_in_adapter(model, config)
    except ValueError as exc:  # peft knows default module names for common architectures only
        raise ValueError(f"model.ia3: {exc}; set model.ia3.target_modules and feedforward_modules") from None


def load_policy(cfg: ModelConfig) -> PreTrainedModel:
    model = load_causal_lm(cfg)
    if cfg.lora:
        return add_lora(model, cfg.lora)
    return add_ia3(model, cfg.ia3) if cfg.ia3 else model


def checkpoint_model_config(checkpoint: Path) -> ModelConfig:
    """The model settings of the run a checkpoint (`RUN/checkpoints/step-N`) belongs to, from its config.yaml."""
    run_config = Path(checkpoint).parent.parent / "config.yaml"
    if not run_config.exists():
        raise FileNotFoundError(f"{checkpoint}: a checkpoint needs its run's config at {run_config}")
    return ModelConfig.model_validate((yaml.safe_load(run_config.read_text()) or {}).get("model", {}))


def inference_tokenizer(path: str, trust_remote_code: bool = False) -> object:
    """The tokenizer of a model folder, hub id, `toy`, run folder (its `model/`) or checkpoint (its run's)."""
    folder = Path(resolve_path(path))
    if (folder / "trainable.safetensors").exists():  # a checkpoint: its run's model, or the model it started from
        run = folder.parent.parent
        folder = run if (run / "model").is_dir() else Path(resolve_path(checkpoint_model_config(folder).name_or_path))
    folder = folder / "model" if (folder / "model").is_dir() else folder
    return load_pretrained_files(AutoTokenizer, str(folder), trust_remote_code=trust_remote_code)


def frozen_model(cfg: ModelConfig, path: str) -> PreTrainedModel:
    """Another model the run reads but never trains (a soup ingredient, RTO's DPO model): loaded as for
    inference (model, run or checkpoint folder), in the policy's dtype, dropout off, on no device yet."""
    model = load_for_inference(path, trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
    return disable_dropout(model.to(DTYPES[cfg.dtype])).eval().requires_grad_(False)


def load_for_inference(path: str, trust_remote_code: bool = False, allow_pickle: bool = False) -> PreTrainedModel:
    """A trained policy by where it lies: a model folder, hub id or `toy`; a run folder (its `model/`); or one
    checkpoint of a run (`RUN/checkpoints/step-N`: the run's config.yaml rebuilds the model, its adapter included,
    and the checkpoint's trainable weights are copied in). A run folder is not trusted input: its config's
    `trust_remote_code` and `allow_pickle` are replaced by this call's, which only the user's command sets."""
    folder = Path(path)
    if (folder / "model" / "config.json").exists():
        folder = folder / "model"
    if not (folder / "trainable.safetensors").exists():
        return load_pretrained_model(AutoModelForCausalLM, resolve_path(str(folder) if folder.exists() else path),
                                     trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    model = load_policy(checkpoint_model_config(folder).model_copy(update={"trust_remote_code": trust_remote_code,
                                                       "allow_pickle": allow_pickle}))
    params = dict(model.named_parameters())
    saved = load_file(folder / "trainable.safetensors")
    unknown = sorted(set(saved) - set(params))
    if unknown:
        raise ValueError(f"{folder}: checkpoint tensors the model does not have, e.g. {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)
    return model.merge_and_unload() if hasattr(model, "peft_config") else model
