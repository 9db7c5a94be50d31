"""Attention over packed, prefix-shared rows that computes only the blocks the layout lets tokens see.

A boolean [L, L] mask makes SDPA score every query against every key of the row, though a completion sees
only its prompt and itself and nothing crosses groups: for a pair with a 150-token prompt and two 250-token
answers, half of the 650 x 650 scores are thrown away, and packing several groups per row wastes more. Here
each segment of a row is one SDPA call: a prompt attends to itself causally (the kernel's own causal path),
a completion to [its prompt | itself] with the prompt fully visible and itself causal. This is the CPU and
generic-GPU counterpart of varlen flash attention.

It is registered with transformers as the attention implementation `prefalign_packed`. Called without a
layout (generation, the padded path, a model's own forward) it is exactly transformers' SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from prefalign.data.packing import SegmentLayout

NAME = "prefalign_packed"


def packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     packed_segments: SegmentLayout | None = None, **kwargs: object) -> tuple[torch.Tensor, None]:
    """query [R, H, L, D], key/value [R, H_kv, L, D] -> ([R, L, H, D], None), as transformers expects."""
    if packed_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    rows = []
    for r, segments in enumerate(packed_segments.rows):
        # [1, H, n, D] slices: SDPA's fused CPU kernel takes 4D inputs (3D ones fall back to the unfused path)
        q_row, k_row, v_row = query[r:r + 1], key[r:r + 1], value[r:r + 1]
        parts = []
        for s in segments:
            q = q_row[:, :, s.start:s.end]
            prefix = s.prefix_end - s.prefix_start
            if prefix == 0:
                out = F.scaled_dot_product_attention(q, k_row[:, :, s.start:s.end], v_row[:, :, s.start:s.end],
                                                     dropout_p=dropout, scale=scaling, is_causal=True)
            else:
                k = torch.cat([k_row[:, :, s.prefix_start:s.prefix_end], k_row[:, :, s.start:s.end]], dim=2)
                v = torch.cat([v_row[:, :, s.prefix_start:s.prefix_end], v_row[:, :, s.start:s.end]], dim=2)
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling,
                                                     attn_mask=packed_segments.mask(s.end - s.start, prefix, q.device))
            parts.append(out)
        used = segments[-1].end if segments else 0
        if used < query.shape[2]:  # padding at the row's end: its outputs are never read
            parts.append(query.new_zeros(1, query.shape[1], query.shape[2] - used, value.shape[-1]))
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, packed_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)


def supports_packed_attention(model: torch.nn.Module) -> bool:
    """SDPA models whose every layer attends fully (no sliding windows) and without logit soft-capping."""
    cfg = model.config
    if getattr(cfg, "_attn_implementation", None) not in ("sdpa", NAME):
        return False
    layer_types = getattr(cfg, "layer_types", None) or ["full_attention"]
    sliding = getattr(cfg, "sliding_window", None) is not None and getattr(cfg, "use_sliding_window", True)
    return all(t == "full_attention" for t in layer_types) and not sliding and not getattr(cfg, "attn_logit_softcapping", None)


def enable_packed_attention(model: torch.nn.Module) -> bool:
    """Switch a supported model to `prefalign_packed` (idempotent); False if it keeps its own attention."""
    if not supports_packed_attention(model):
        return False
    if model.config._attn_implementation != NAME:
        model.set_attn_implementation(NAME)
    return True
