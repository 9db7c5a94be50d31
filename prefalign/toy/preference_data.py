"""Toy preference pairs: sample responses from the base, rank them with the gold reward, keep best vs worst.

Written as TRL-standard JSONL ({"prompt", "chosen", "rejected"}, plus the two gold scores and the two brevity
scores). From the same rows: joint pairs across prompts (DOVE) and triples with the world's ideal answer
as gold (TPO)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_text_atomic
from prefalign.cache import cache_root
from prefalign.decoding.sampling import sample
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.toy.gold_reward import brevity_reward, gold_reward
from prefalign.toy.world import IDEAL, respond, split_prompts


def toy_pairs(model: torch.nn.Module, tokenizer: object, n_prompts: int, n_samples: int = 4, seed: int = 0,
              max_new_tokens: int = 48) -> list[dict]:
    train_prompts, _ = split_prompts()
    prompts = random.Random(seed).sample(train_prompts, n_prompts)
    rows = []
    for prompt, samples in zip(prompts, sample(model, tokenizer, prompts, n=n_samples, seed=seed,
                                               max_new_tokens=max_new_tokens)):
        # An empty sample (EOS first) is no response a preference file can hold; rank the others.
        scored = sorted(((gold_reward(prompt, s.text), s.text) for s in samples if s.text.strip()), key=lambda x: -x[0])
        if len(scored) < 2:
            continue
        (best, chosen), (worst, rejected) = scored[0], scored[-1]
        if best > worst and chosen != rejected:  # ties carry no preference
            rows.append({"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected,
                         "score_chosen": best, "score_rejected": worst,
                         "brevity_chosen": brevity_reward(prompt, chosen),
                         "brevity_rejected": brevity_reward(prompt, rejected),
                         # every scored sample, for rated-data methods (Curry-DPO's curriculum)
                         "samples": [{"response": " " + text, "score": score} for score, text in scored]})
    return rows


def rated_rows(rows: list[dict]) -> list[dict]:
    """The same prompts as rated data: every scored sample of each (UltraFeedback's shape)."""
    return [{"prompt": r["prompt"], "completions": r["samples"]} for r in rows if len(r.get("samples", [])) >= 2]


def joint_rows(rows: list[dict], seed: int = 0) -> list[dict]:
    """DOVE's joint pairs: row i's chosen answer against another prompt's rejected answer, kept where the
    gold reward prefers the first (a comparison across instructions)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    out = []
    for i, j in zip(order, order[1:] + order[:1]):
        a, b = rows[i], rows[j]
        if a["score_chosen"] > b["score_rejected"]:
            out.append({"chosen_prompt": a["prompt"], "chosen": a["chosen"], "rejected_prompt": b["prompt"],
                        "rejected": b["rejected"]})
    return out


def triple_rows(rows: list[dict], seed: int = 0) -> list[dict]:
    """TPO's triples: the world's ideal answer as gold, then the pair's chosen and rejected answers."""
    rng = random.Random(seed)
    return [{"prompt": r["prompt"], "gold": " " + respond(r["prompt"], IDEAL, rng), "chosen": r["chosen"],
             "rejected": r["rejected"]} for r in rows]


def demonstration_rows(n_prompts: int, seed: int = 0) -> list[dict]:
    """SFT demonstrations as an expert would write them: the world's ideal answer to training prompts."""
    rng = random.Random(seed)
    prompts = rng.sample(split_prompts()[0], n_prompts)
    return [{"prompt": p, "completion": " " + respond(p, IDEAL, rng)} for p in prompts]


def write_toy_pairs(out_dir: Path, seed: int = 0, n_prompts: int = 1200, n_samples: int = 4,
                    base: str | Path = TOY_BASE) -> Path:
    model = load_pretrained_model(AutoModelForCausalLM, str(base))
    tokenizer = load_pretrained_files(AutoTokenizer, str(base))
    rows = toy_pairs(model, tokenizer, n_prompts, n_samples, seed)
    return write_jsonl(Path(out_dir) / "toy_pairs.jsonl", rows)


def cached_toy_pairs(out_dir: Path, seed: int = 0, n_prompts: int = 1200, n_samples: int = 4,
                     say: Callable[[str], None] = print) -> Path:
    """`out_dir/toy_pairs.jsonl`, kept if already there (a resumed run), else copied from the cache, keyed by
    the settings and the bundled base's files, else sampled (saying so: it takes a minute) and cached."""
    target = Path(out_dir) / "toy_pairs.jsonl"
    if target.exists():
        return target
    key = json.dumps({"seed": seed, "prompts": n_prompts, "samples": n_samples,
                      "base": sorted((f.name, f.stat().st_size) for f in Path(TOY_BASE).iterdir() if f.is_file())})
    cached = cache_root() / "toy_pairs" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"
    if not cached.exists():
        say(f"data: sampling the toy base for toy pairs: {n_prompts} prompts x {n_samples} samples (cached in "
            f"{cached.parent} for later runs)")
        started = time.perf_counter()
        scratch = cached.parent / f".tmp-{os.getpid()}"  # two runs filling the cache at once never collide
        write_toy_pairs(scratch, seed, n_prompts, n_samples).replace(cached)
        scratch.rmdir()
        say(f"data: toy pairs sampled in {time.perf_counter() - started:.0f}s")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, target.with_suffix(".tmp"))
    target.with_suffix(".tmp").replace(target)
    return target


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path
