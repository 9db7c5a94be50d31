"""Best-of-N and rejection sampling: sample the base, keep what a scorer likes.

Best-of-N draws N samples per prompt (as one batch) and keeps the highest-scoring one; its KL from the base
is at most log N - (N - 1) / N (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment
policy"). Rejection sampling draws until a sample scores at least `threshold`, up to `max_tries` rounds,
keeping the best seen when none passes."""

from __future__ import annotations

import math

import torch

from prefalign.decoding.guidance import TextScore
from prefalign.decoding.sampling import Sample, sample


def best_of_n_kl_bound(n: int) -> float:
    return math.log(n) - (n - 1) / n


def best_of_n(model: torch.nn.Module, tokenizer: object, prompts: list[str], score: TextScore, n: int = 8,
              max_new_tokens: int = 48, seed: int = 0, draft: torch.nn.Module | None = None,
              draft_tokens: int = 4) -> tuple[list[Sample], int]:
    """The best of n samples per prompt, and the number of tokens drawn; `draft` samples speculatively."""
    groups = sample(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens, seed=seed, draft=draft,
                    draft_tokens=draft_tokens)
    flat = [s for g in groups for s in g]
    scores = score([s.prompt for s in flat], [s.text for s in flat])
    # ties go to the earliest sample, so a constant scorer returns the base's first sample
    best = [g[max(range(n), key=lambda j, i=i: (scores[i * n + j], -j))] for i, g in enumerate(groups)]
    return best, sum(len(s.completion_ids) for s in flat)


def rejection_sample(model: torch.nn.Module, tokenizer: object, prompts: list[str], score: TextScore,
                     threshold: float, max_tries: int = 8, max_new_tokens: int = 48,
                     seed: int = 0, draft: torch.nn.Module | None = None,
                     draft_tokens: int = 4) -> tuple[list[Sample], int]:
    """The first sample per prompt scoring at least `threshold` (else the best), and the tokens drawn."""
    drawn_tokens = 0
    best: list[tuple[float, Sample] | None] = [None] * len(prompts)
    todo = list(range(len(prompts)))
    for attempt in range(max_tries):
        if not todo:
            break
        drawn = [g[0] for g in sample(model, tokenizer, [prompts[i] for i in todo], max_new_tokens=max_new_tokens,
                                      seed=seed + attempt, draft=draft, draft_tokens=draft_tokens)]
        drawn_tokens += sum(len(s.completion_ids) for s in drawn)
        scores = score([s.prompt for s in drawn], [s.text for s in drawn])
        for i, s, r in zip(todo, drawn, scores):
            if best[i] is None or r > best[i][0]:
                best[i] = (r, s)
        todo = [i for i in todo if best[i][0] < threshold]
    return [b[1] for b in best], drawn_tokens
