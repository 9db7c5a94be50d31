"""MODPO over several weight vectors: one policy per weighting, each scored on every objective, and the
Pareto front of those scores.

`sweep_modpo` works on any config whose data carries the other objectives' columns; `run_toy_sweep` is the
toy task's instance (gold reward from the pairs, brevity as the second objective)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import LossTerm, TrainConfig
from prefalign.decoding.sampling import sample
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.quickstart import quickstart_config
from prefalign.toy.gold_reward import brevity_reward, gold_reward
from prefalign.toy.preference_data import write_toy_pairs
from prefalign.toy.world import split_prompts
from prefalign.training.preference import train_preference

Reward = Callable[[str, str], float]


@dataclass
class SweepPoint:
    weights: dict[str, float]  # the preference objective's weight and the others'
    scores: dict[str, float]  # mean reward per objective on the evaluation prompts
    on_front: bool = False


def pareto_front(points: list[SweepPoint]) -> list[SweepPoint]:
    """Mark the points no other point dominates (at least as good on every objective, better on one)."""
    for p in points:
        p.on_front = not any(
            all(q.scores[k] >= p.scores[k] for k in p.scores) and any(q.scores[k] > p.scores[k] for k in p.scores)
            for q in points if q is not p)
    return points


def objective_means(model: torch.nn.Module, tokenizer: object, prompts: list[str], objectives: dict[str, Reward],
                    seed: int, asked: list[str] | None = None) -> dict[str, float]:
    """One sample per prompt (from `asked`, the prompts as given to the model, when they differ), each
    objective's mean over the prompts."""
    texts = [s.text for per_prompt in sample(model, tokenizer, asked or prompts, n=1, seed=seed) for s in per_prompt]
    return {name: float(np.mean([fn(p, t) for p, t in zip(prompts, texts)])) for name, fn in objectives.items()}


def score_policy(model_dir: Path | str, prompts: list[str], objectives: dict[str, Reward], seed: int) -> dict[str, float]:
    model = load_pretrained_model(AutoModelForCausalLM, str(model_dir))
    tokenizer = load_pretrained_files(AutoTokenizer, str(model_dir))
    return objective_means(model, tokenizer, prompts, objectives, seed)


def sweep_modpo(base: TrainConfig, preference: str, others: list[str], preference_weights: list[float],
                prompts: list[str], objectives: dict[str, Reward], out: Path, beta: float = 0.1,
                console: Console | None = None) -> list[SweepPoint]:
    """Train MODPO once per w_k in `preference_weights`, the rest (1 - w_k) split evenly over `others`, from
    the same config; score each policy on every objective and mark the front. Writes out/front.json."""
    console = console or Console()
    points = []
    for i, w in enumerate(preference_weights):
        weights = {preference: w} | {name: (1 - w) / len(others) for name in others}
        cfg = base.model_copy(deep=True)
        cfg.trainer.output_dir = str(out / f"w{i:02d}")
        cfg.loss = [LossTerm(name="modpo", beta=beta, preference_weight=w,
                             others={name: weights[name] for name in others})]
        console.rule(f"MODPO weights {weights}")
        run = train_preference(cfg, console=Console(quiet=True), overwrite=True)
        points.append(SweepPoint(weights, score_policy(run.outputs["model"], prompts, objectives, cfg.trainer.seed + 1)))
    points = pareto_front(points)
    write_text_atomic(out / "front.json", json.dumps([asdict(p) for p in points], indent=2))
    return points


def run_toy_sweep(out: Path, preference_weights: list[float], steps: int = 150, n_prompts: int = 1000,
                  n_eval_prompts: int = 200, seed: int = 0, console: Console | None = None,
                  doc: Path | None = None) -> list[SweepPoint]:
    """The toy front: pairs ranked by the gold reward, brevity (-0.1 per word) as the other objective."""
    data = write_toy_pairs(out / "data", seed=seed, n_prompts=n_prompts)
    base = quickstart_config(out, seed=seed, steps=steps)
    base.data.train = str(data)
    base.trainer.progress = False
    prompts = random.Random(seed).sample(split_prompts()[1], n_eval_prompts)
    objectives = {"gold": gold_reward, "brevity": brevity_reward}
    points = sweep_modpo(base, "gold", ["brevity"], preference_weights, prompts, objectives, out, console=console)
    reference = score_policy(TOY_BASE, prompts, objectives, seed + 1)
    write_text_atomic(out / "base_scores.json", json.dumps(reference))
    print_front(points, reference, console or Console())
    if doc is not None:
        setup = (f"{steps} steps of 16 pairs per weighting (lr 2e-4, beta 0.1, seed {seed}), pairs ranked by the gold "
                 f"reward on {n_prompts} prompts; scores are means over {n_eval_prompts} held-out prompts, one "
                 "sample each at temperature 1.")
        write_text_atomic(doc, render_front(points, reference, setup))
    return points


def render_front(points: list[SweepPoint], base_scores: dict[str, float], setup: str) -> str:
    names = list(points[0].scores)
    lines = ["# MODPO front on the toy task", "",
             "Generated by `prefalign modpo-sweep` (prefalign/evaluation/modpo_sweep.py); do not edit by hand.",
             setup, "", "| weights | " + " | ".join(names) + " | on the front |",
             "|---|" + "---|" * (len(names) + 1),
             "| base | " + " | ".join(f"{base_scores[n]:.3f}" for n in names) + " | |"]
    for p in points:
        weights = ", ".join(f"{k} {v:.2f}" for k, v in p.weights.items())
        lines.append(f"| {weights} | " + " | ".join(f"{p.scores[n]:.3f}" for n in names)
                     + f" | {'yes' if p.on_front else ''} |")
    return "\n".join(lines) + "\n"


def print_front(points: list[SweepPoint], base_scores: dict[str, float] | None, console: Console) -> None:
    names = list(points[0].scores)
    table = Table(title="MODPO front")
    for col in ["weights", *names, "on front"]:
        table.add_column(col)
    if base_scores:
        table.add_row("base", *[f"{base_scores[n]:.3f}" for n in names], "")
    for p in points:
        table.add_row(", ".join(f"{k} {v:.2f}" for k, v in p.weights.items()),
                      *[f"{p.scores[n]:.3f}" for n in names], "yes" if p.on_front else "")
    console.print(table)
