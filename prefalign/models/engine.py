"""Engine switches that wrap a model's forward: bf16 autocast and torch.compile (config section `engine`)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from prefalign.config.schema import EngineConfig
from prefalign.models.logprobs import causal_lm


def precision_context(cfg: EngineConfig, model: torch.nn.Module) -> AbstractContextManager:
    """Mixed precision for everything a training step runs: autocast keeps the weights, gradients and optimizer
    state in the model's dtype and runs matmuls in bf16 (the log-probs are taken in fp32 either way)."""
    if cfg.autocast == "off":
        return nullcontext()
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def compile_decoder(model: torch.nn.Module) -> None:
    """Compile the transformer body in place. The packed path calls the decoder directly and the padded path
    through the model's forward; both reach the compiled module. Shapes change with every batch, hence dynamic."""
    causal_lm(model).get_decoder().compile(dynamic=True)


def precision_tag(cfg: EngineConfig, dtype: str) -> str:
    """The numeric setting that a cached reference log-prob depends on."""
    return dtype if cfg.autocast == "off" else f"{dtype}+autocast-{cfg.autocast}"
