"""Labellers for active preference learning: who answers "which of these two is better?" for the pairs the
acquisition picks. Each takes rows with `prompt`, `chosen` and `rejected` (read as two unlabelled
completions a and b, in that order) and returns P(a is better) per row: 1, 0, or 0.5 for a tie.

Adding one is one function and one registry line."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from prefalign.toy.judges import noiseless_judge, noisy_judge
from prefalign.toy.preference_data import write_jsonl

Labeller = Callable[[list[dict]], list[float]]
LABELLERS: dict[str, Callable[..., Labeller]] = {}


def register_labeller(name: str) -> Callable:
    def wrap(fn: Callable[..., Labeller]) -> Callable[..., Labeller]:
        LABELLERS[name] = fn
        return fn
    return wrap


@register_labeller("file")
def file_labels() -> Labeller:
    """The pool's own labels (a file of human labels, revealed only for the pairs asked about): `chosen` wins."""
    return lambda rows: [1.0] * len(rows)


@register_labeller("toy_judge")
def toy_judge(sigma: float = 1.0, seed: int = 0) -> Labeller:
    """The toy world's judge: the gold reward, plus N(0, sigma) per response when sigma > 0."""
    judge = noisy_judge(sigma, seed) if sigma > 0 else noiseless_judge
    return lambda rows: [judge(r["prompt"], r["chosen"], r["rejected"]) for r in rows]


@register_labeller("reward_model")
def reward_model_labels(folder: str, max_length: int | None = None) -> Labeller:
    """A trained reward model: the completion it scores higher wins."""
    from prefalign.rewards.evaluate import score_with_reward_model

    def label(rows: list[dict]) -> list[float]:
        with tempfile.TemporaryDirectory() as tmp:
            path = write_jsonl(Path(tmp) / "asked.jsonl", rows)
            margins = score_with_reward_model(folder, str(path), max_length).margins
        return [1.0 if m > 0 else 0.0 if m < 0 else 0.5 for m in margins.tolist()]
    return label


def build_labeller(name: str, **options: object) -> Labeller:
    if name not in LABELLERS:
        raise ValueError(f"--labeller {name!r}: choose from {', '.join(LABELLERS)}")
    return LABELLERS[name](**options)


def oriented(rows: list[dict], labels: list[float]) -> tuple[list[dict], int]:
    """The rows as preference pairs, the labeller's winner as `chosen`; ties dropped. Returns (pairs, ties)."""
    out = []
    for row, label in zip(rows, labels):
        if label == 0.5:
            continue
        out.append(row if label == 1.0 else {**row, "chosen": row["rejected"], "rejected": row["chosen"]})
    return out, len(rows) - len(out)
