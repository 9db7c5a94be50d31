"""LiNeS (Wang et al. 2024, "LiNeS: Post-training Layer Scaling Prevents Forgetting and Enhances Model
Merging"): scale a (merged) task vector by the depth of the layer it belongs to,

    theta^(l) = theta_0^(l) + lambda(l) tau^(l),   lambda(l) = alpha + beta * l / (L - 1),   l = 0 .. L - 1,

so shallow layers stay near the pretrained weights (general features) and deep layers keep the fine-tuned
change. Parameters before the first block (embeddings) count as depth 0; those after the last block (final
norm, LM head) as depth L - 1."""

from __future__ import annotations

import re

BLOCK = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")


def block_index(name: str) -> int | None:
    match = BLOCK.search(name)
    return int(match.group(1)) if match else None


def depths(names: list[str]) -> dict[str, int]:
    """Each parameter's depth l, from its block index; names in the model's parameter order."""
    blocks = [block_index(n) for n in names]
    known = [b for b in blocks if b is not None]
    if not known:
        raise ValueError("LiNeS needs a model made of numbered blocks (e.g. model.layers.N.*); none found")
    first = blocks.index(known[0])
    deepest = max(known)
    return {n: (b if b is not None else 0 if i < first else deepest) for i, (n, b) in enumerate(zip(names, blocks))}


def lines_scales(names: list[str], alpha: float, beta: float) -> dict[str, float]:
    """lambda(l) per parameter name."""
    d = depths(names)
    deepest = max(d.values())
    return {n: alpha + beta * (depth / deepest if deepest else 1.0) for n, depth in d.items()}
