"""Score preference pairs with a reward model or with a DPO policy's implicit reward, and summarise: accuracy
overall, per subset (the pairs' `subset` column) and per section (RewardBench's weighting), calibration, and
for policies the ranking accuracy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from prefalign.config.schema import DataConfig, ModelConfig
from prefalign.data.collate import PairBatch, collate_pairs, fixed_batches
from prefalign.data.errors import DataError
from prefalign.data.examples import PreferencePair
from prefalign.data.loading import load_examples, to_pairs
from prefalign.data.tokenize import CompletionTokenizer
from prefalign.models.loading import load_causal_lm, load_tokenizer
from prefalign.models.logprobs import sequence_logps
from prefalign.rewards.inputs import RewardTokenizer
from prefalign.rewards.metrics import (
    expected_calibration_error,
    pair_accuracy,
    ranking_accuracy,
    section_scores,
    subset_accuracies,
)
from prefalign.rewards.model import load_reward_model
from prefalign.rewards.scoring import load_reward_tokenizer
from prefalign.rewards.train import batch_margins

log = logging.getLogger(__name__)


@dataclass
class ScoredPairs:
    pairs: list[PreferencePair]
    margins: np.ndarray  # per pair: how strongly the scorer prefers the chosen response
    policy_logp_diff: np.ndarray | None = None  # log pi(y_w|x) - log pi(y_l|x), for ranking accuracy
    policy_logps: np.ndarray | None = None  # [pairs, 2]: log pi(y_w|x), log pi(y_l|x)


def pair_batches(source: str, tok: RewardTokenizer | CompletionTokenizer, pad_id: int, batch_size: int = 16,
                 packed: bool = True, on_bad_row: str = "error") -> tuple[list[PreferencePair], list[PairBatch]]:
    """Every pair of `source` (any pairwise format), tokenized by `tok`, in dataset order. With on_bad_row
    skip, rows that cannot be read or tokenized are left out and their summary goes to the log."""
    cfg = DataConfig(train=source, eval_fraction=0.0, on_bad_row=on_bad_row)
    loaded = load_examples(source, cfg)
    kept, tokenized = [], []
    for pair in to_pairs(loaded, cfg):
        try:
            tokenized.append(tok.pair(pair))
        except DataError as err:
            if on_bad_row == "error":
                raise
            loaded.tally.add(err)
            continue
        kept.append(pair)
    if loaded.tally.skipped:
        for line in loaded.tally.summary_lines():
            log.warning("%s: %s", source, line)
    batches = fixed_batches(tokenized, batch_size, pad_id, collate=partial(collate_pairs, packed=packed))
    return kept, batches


def score_with_reward_model(model_dir: str, source: str, max_length: int | None = None, batch_size: int = 16,
                            weights: list[float] | None = None, trust_remote_code: bool = False,
                            on_bad_row: str = "error") -> ScoredPairs:
    """A reward model's margins on every pair, at `max_length` or else the length it was trained at."""
    model = load_reward_model(model_dir, trust_remote_code)
    tok = load_reward_tokenizer(model_dir, max_length, trust_remote_code)
    pairs, batches = pair_batches(source, tok, tok.pad_id, batch_size, packed=model.spec.kind == "decoder",
                                  on_bad_row=on_bad_row)
    w = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
    if w is not None and len(w) != len(model.spec.objectives):
        raise ValueError(f"--weights has {len(w)} values; the reward model has {len(model.spec.objectives)} "
                         f"objectives {model.spec.objectives}")
    return ScoredPairs(pairs, batch_margins(model, batches, w))


@torch.no_grad()
def _logp_sums(model: torch.nn.Module, batches: list[PairBatch]) -> np.ndarray:
    """[pairs, 2]: log pi(y_w|x), log pi(y_l|x)."""
    model.eval()
    out = []
    for b in batches:
        s = sequence_logps(model, b.tokens).sum.float()
        out.append(torch.stack([s[:b.num_pairs], s[b.num_pairs:]], dim=1))
    return torch.cat(out).numpy()


def score_with_implicit_reward(policy: str, reference: str, source: str, beta: float = 0.1, max_length: int = 512,
                               batch_size: int = 16, trust_remote_code: bool = False,
                               allow_pickle: bool = False, on_bad_row: str = "error") -> ScoredPairs:
    """A DPO policy as a reward model: r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)) (Rafailov et al. 2023)."""
    def config(path: str) -> ModelConfig:
        return ModelConfig(name_or_path=path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)

    tokenizer = load_tokenizer(config(policy))
    pairs, batches = pair_batches(source, CompletionTokenizer(tokenizer, max_length), tokenizer.pad_token_id,
                                  batch_size, on_bad_row=on_bad_row)
    pol = _logp_sums(load_causal_lm(config(policy)), batches)
    ref = _logp_sums(load_causal_lm(config(reference)), batches)
    implicit = beta * ((pol[:, 0] - ref[:, 0]) - (pol[:, 1] - ref[:, 1]))
    return ScoredPairs(pairs, implicit, pol[:, 0] - pol[:, 1], pol)


def summarize(scored: ScoredPairs, sections: dict[str, list[str]] | None = None,
              subset_column: str = "subset") -> dict:
    """Accuracy, ECE, per-group accuracy and ECE when the pairs carry `subset_column` (a subset, or the group
    of annotators), sections when given. Some pairs with the column and some without is an error."""
    summary = {"pairs": len(scored.pairs), "accuracy": pair_accuracy(scored.margins),
               "ece": expected_calibration_error(scored.margins), "mean_margin": float(np.mean(scored.margins))}
    subsets = [p.tags.get(subset_column) for p in scored.pairs]
    missing = sum(s is None for s in subsets)
    if 0 < missing < len(subsets):
        first = next(p for p, s in zip(scored.pairs, subsets) if s is None)
        raise ValueError(f"{first.ref}: no {subset_column!r} column ({missing} of {len(subsets)} pairs lack it)")
    if subsets and not missing:
        summary["subsets"] = subset_accuracies(scored.margins, subsets)
        if sections:
            summary["sections"] = section_scores(summary["subsets"], sections)
    if scored.policy_logp_diff is not None:
        summary["ranking_accuracy"] = ranking_accuracy(scored.policy_logp_diff, np.zeros_like(scored.policy_logp_diff))
    return summary
