"""`prefalign dpa`: Directional Preference Alignment's training (pluralistic/directional.py has the math):
rounds of preference-conditioned rejection-sampling fine-tuning from one model, scored by two scorers.

Writes into trainer.output_dir: `round-K/` (each round's SFT run), `model/` (the result, loadable with
from_pretrained) and `dpa.json` (the objectives, the standardisation fitted on the first round's samples, and
how to ask for a direction)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import DPATrainConfig, TrainerConfig
from prefalign.data.prompts import cycling_slice
from prefalign.data.tokenize import CompletionTokenizer
from prefalign.decoding.sampling import sample
from prefalign.models.loading import load_policy, load_tokenizer
from prefalign.online.recipe import online_prompts
from prefalign.online.scorers import Scorer, build_scorer
from prefalign.pluralistic import directional as dpa
from prefalign.training.export import save_pretrained_atomic
from prefalign.training.sft import train_sft


def score_samples(scorers: list[Scorer], prompts: list[str], texts: list[list[str]], seed: int) -> np.ndarray:
    """Rewards [prompts, samples, objectives] of every sample under every scorer."""
    flat_prompts = [p for p, row in zip(prompts, texts) for _ in row]
    flat = [t for row in texts for t in row]
    n = len(texts[0]) if texts else 0
    columns = [np.asarray(s.score(flat_prompts, flat, seed), dtype=float) for s in scorers]
    return np.stack(columns, -1).reshape(len(prompts), n, len(scorers))


def rsf_round(model: torch.nn.Module, tokenizer: object, prompts: list[str], scorers: list[Scorer],
              scale: dpa.ObjectiveScale | None, trainer: TrainerConfig, run_dir: Path, samples: int, seed: int,
              console: Console, max_new_tokens: int = 48, max_length: int = 128) -> dpa.ObjectiveScale:
    """One round in place: a random direction per prompt, `samples` completions asked with it, SFT on the best
    for it. Without a `scale`, it is fitted on this round's samples; returns the scale used."""
    steps = dpa.draw_steps(len(prompts), seed)
    asked = [dpa.condition(p, k) for p, k in zip(prompts, steps)]
    drawn = sample(model.eval(), tokenizer, asked, n=samples, max_new_tokens=max_new_tokens, seed=seed)
    texts = [[s.text for s in row] for row in drawn]
    rewards = score_samples(scorers, prompts, texts, seed)
    scale = scale or dpa.ObjectiveScale.fit(rewards.reshape(-1, rewards.shape[-1]))
    encoder = CompletionTokenizer(tokenizer, max_length=max_length)
    tokenized = [encoder.encode(p, y) for p, y in dpa.rsf_examples(prompts, texts, rewards, scale, steps)]
    random.Random(seed).shuffle(tokenized)
    train_sft(model.train(), tokenized, tokenizer.pad_token_id, trainer, run_dir, console=console)
    return scale


def train_dpa(cfg: DPATrainConfig, console: Console | None = None) -> Path:
    console = console or Console()
    out = Path(cfg.trainer.output_dir)
    tokenizer, model = load_tokenizer(cfg.model), load_policy(cfg.model)
    prompts = online_prompts(cfg.prompts, cfg.trainer.seed)
    scorers = [build_scorer(spec) for spec in cfg.objectives]
    scale = None
    for k in range(cfg.rounds):
        console.print(f"dpa: round {k + 1} of {cfg.rounds}: {cfg.prompts_per_round} prompts x {cfg.samples} samples",
                      markup=False)
        batch = cycling_slice(prompts, k * cfg.prompts_per_round, cfg.prompts_per_round)
        trainer = cfg.trainer.model_copy(update={"seed": cfg.trainer.seed + k, "output_dir": str(out / f"round-{k}")})
        scale = rsf_round(model, tokenizer, batch, scorers, scale, trainer, out / f"round-{k}", cfg.samples,
                          cfg.trainer.seed + 10 * k, console, cfg.max_new_tokens, cfg.max_length)
    folder = save_pretrained_atomic(model.eval(), tokenizer, out / "model", cfg.model_dump())
    write_text_atomic(out / "dpa.json", json.dumps({
        "objectives": cfg.objectives, "scale": {"mean": scale.mean, "sd": scale.sd},
        "ask": f"{dpa.PREFIX} K PROMPT: the direction at {dpa.STEP_DEGREES} K degrees from {cfg.objectives[0]} "
               f"towards {cfg.objectives[1]}, K = 0..{dpa.STEPS - 1}"}, indent=1))
    return folder
