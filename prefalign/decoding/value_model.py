"""Prefix value functions for guided decoding, trained on rollouts of the frozen base model.

V(x, y_<=t) estimates the reward the base's completion of (x, y_<=t) will get. Targets are lambda-returns
over the completion's positions t = 1..T (reward only at the end, gamma = 1):

    G_T = r(x, y),    G_t = (1 - lambda) V_target(x, y_<=t+1) + lambda G_{t+1}

- lambda = 1: every prefix regresses on the final reward, CD-FUDGE (Mudgal et al. 2024, "Controlled
  Decoding from Language Models").
- lambda < 1: temporal-difference targets bootstrapped from the value itself (held fixed within a step),
  as Value Augmented Sampling trains its value (Han et al. 2024, "Value Augmented Sampling for Language
  Model Alignment and Personalization").
The loss is the mean squared error over completion positions."""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from prefalign.atomic_files import replace_dir
from prefalign.decoding.guidance import PrefixScorer
from prefalign.decoding.sampling import Sample, sample
from prefalign.models.pretrained import load_pretrained_model


@dataclass
class Rollouts:
    samples: list[Sample]
    rewards: list[float]


def collect_rollouts(model: torch.nn.Module, tokenizer: object, prompts: list[str], reward: object, n: int = 4,
                     max_new_tokens: int = 48, seed: int = 0) -> Rollouts:
    """`n` samples of the base per prompt, each scored by `reward(prompts, texts) -> list[float]`."""
    flat = [s for group in sample(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens, seed=seed) for s in group]
    return Rollouts(flat, list(reward([s.prompt for s in flat], [s.text for s in flat])))


def new_value_model(body_from: str) -> PrefixScorer:
    """A value model on the body of a causal LM (its weights as the starting point), head at zero."""
    body = load_pretrained_model(AutoModel, str(body_from))
    head = torch.nn.Linear(body.config.hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return PrefixScorer(body, head)


def _batch(samples: list[Sample], rewards: list[float], pad_id: int) -> tuple[torch.Tensor, ...]:
    rows = [s.prompt_ids + s.completion_ids for s in samples]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    completion = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (s, row) in enumerate(zip(samples, rows)):  # right padding; values are read at completion tokens
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
        completion[i, len(s.prompt_ids):len(row)] = True
    return ids, mask, completion, torch.tensor(rewards, dtype=torch.float32)


def lambda_returns(values: torch.Tensor, completion: torch.Tensor, reward: torch.Tensor, lam: float) -> torch.Tensor:
    """Targets G_t for every position (meaningful where `completion`), from values [B, T] held fixed."""
    targets = torch.zeros_like(values)
    for i in range(values.shape[0]):
        pos = completion[i].nonzero().flatten().tolist()
        g = float(reward[i])
        for j in reversed(range(len(pos))):
            if j < len(pos) - 1:
                g = (1 - lam) * float(values[i, pos[j + 1]]) + lam * g
            targets[i, pos[j]] = g
    return targets


def train_value(model: PrefixScorer, rollouts: Rollouts, pad_id: int, lam: float = 1.0, steps: int = 200,
                batch_size: int = 32, lr: float = 3e-4, seed: int = 0) -> list[float]:
    """Fits V on the rollouts; returns the loss per step."""
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        idx = rng.sample(range(len(rollouts.samples)), min(batch_size, len(rollouts.samples)))
        ids, mask, completion, reward = _batch([rollouts.samples[i] for i in idx], [rollouts.rewards[i] for i in idx],
                                               pad_id)
        values, _ = model(ids, mask)
        targets = lambda_returns(values.detach(), completion, reward, lam)
        loss = ((values - targets)[completion] ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses


def save_value_model(model: PrefixScorer, tokenizer: object, out: Path) -> Path:
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.body.save_pretrained(tmp / "body", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "body")
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, tmp / "head.safetensors")
    replace_dir(tmp, out)
    return out


def load_value_model(folder: str | Path) -> PrefixScorer:
    body = load_pretrained_model(AutoModel, str(Path(folder) / "body"))
    head = torch.nn.Linear(body.config.hidden_size, 1)
    head.load_state_dict(load_file(Path(folder) / "head.safetensors"))
    return PrefixScorer(body, head).eval()
