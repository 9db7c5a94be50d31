"""An on-disk cache of precomputed reference log-probs, so a second run (another loss, another learning rate)
on the same reference and data does not run the reference again.

The key hashes what the numbers depend on: the reference model's identity (hub id or path, dtype, and for a
local folder the name, size and modification time of every file in it) and the exact token ids of every
example in order (so the data, the tokenizer and every tokenisation setting are covered). A table is written
under a temporary name and renamed, so an interrupted computation leaves no entry behind."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from prefalign.cache import cache_root
from prefalign.data.tokenize import TokenizedPair
from prefalign.models.loading import resolve_path
from prefalign.models.reference import PrecomputedReference


def default_cache_dir() -> Path:
    return cache_root() / "reference_logps"


def model_fingerprint(name_or_path: str, dtype: str) -> dict:
    path = Path(resolve_path(name_or_path))
    files = []
    if path.is_dir():
        files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file())
    return {"model": str(path.resolve()) if path.exists() else name_or_path, "dtype": dtype, "files": files}


def cache_key(fingerprint: dict, pairs: list[TokenizedPair]) -> str:
    digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode())
    for p in pairs:
        digest.update(json.dumps([p.prompt_ids, p.chosen_ids, p.rejected_ids, p.rejected_prompt_ids]).encode())
    return digest.hexdigest()[:32]


def load_cached(cache_dir: Path, key: str) -> PrecomputedReference | None:
    path = cache_dir / f"{key}.safetensors"
    if not path.exists():
        return None
    return PrecomputedReference(*load_file(path)["table"])


def save_cached(cache_dir: Path, key: str, reference: PrecomputedReference) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{key}.safetensors"
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    table = torch.stack([reference.chosen, reference.rejected, reference.n_chosen, reference.n_rejected])
    save_file({"table": table.contiguous()}, tmp)
    os.replace(tmp, path)
    return path
