"""`prefalign decode` as a function: build the strategy's setup from a DecodeConfig, decode, score, write."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import DecodeConfig
from prefalign.decoding.guidance import PrefixScorer
from prefalign.decoding.speculative import load_draft
from prefalign.decoding.strategies import STRATEGIES, DecodeSetup, decode
from prefalign.decoding.value_model import load_value_model
from prefalign.evaluation.pairwise_judges import parse_reward
from prefalign.models.loading import inference_tokenizer, load_for_inference


def decode_setup(cfg: DecodeConfig, trust_remote_code: bool = False, allow_pickle: bool = False) -> DecodeSetup:
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"strategy: unknown strategy {cfg.strategy!r}; choose from {', '.join(STRATEGIES)}")
    load = functools.partial(load_for_inference, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    values = []
    for spec in cfg.value:
        path, _, w = spec.partition("=")
        values.append((load_value_model(path), float(w) if w else 1.0))
    score = parse_reward(cfg.scorer, cfg.weights)[0] if cfg.scorer else None
    reward_model = PrefixScorer.from_reward_model(cfg.reward_model, cfg.weights) if cfg.reward_model else None
    tokenizer = inference_tokenizer(cfg.model, trust_remote_code)
    draft = load_draft(cfg.draft, tokenizer, "cpu", trust_remote_code, allow_pickle) if cfg.draft else None
    return DecodeSetup(load(cfg.model), tokenizer, score=score,
                       reward_model=reward_model, values=values, baseline=load(cfg.baseline) if cfg.baseline else None,
                       draft=draft, draft_tokens=cfg.draft_tokens, k=cfg.k, weight=cfg.weight, block=cfg.block, horizon=cfg.horizon,
                       guidance_scale=cfg.guidance_scale, negative_prompt=cfg.negative_prompt, threshold=cfg.threshold,
                       greedy=cfg.greedy, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)


def run_decode(cfg: DecodeConfig, prompts: list[str], trust_remote_code: bool = False,
               allow_pickle: bool = False) -> str:
    """Decode `prompts`, write cfg.out (prompt, completion, scorer reward per line); returns a summary line."""
    setup = decode_setup(cfg, trust_remote_code, allow_pickle)
    start = time.perf_counter()
    decoded = decode(cfg.strategy, setup, prompts)
    seconds = time.perf_counter() - start
    texts = [s.text for s in decoded.samples]
    rewards = setup.score(prompts, texts) if setup.score else [None] * len(prompts)
    write_text_atomic(Path(cfg.out), "".join(json.dumps({"prompt": s.prompt, "completion": s.text, "reward": r}) + "\n"
                                             for s, r in zip(decoded.samples, rewards)))
    mean = f", mean {cfg.scorer} reward {sum(rewards) / len(rewards):.3f}" if setup.score else ""
    return (f"{cfg.strategy}: {len(prompts)} prompts, {decoded.tokens_drawn} tokens drawn in {seconds:.1f}s{mean} "
            f"-> {cfg.out}")
