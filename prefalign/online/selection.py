"""Iterative dual-margin selection for online rounds (Deng et al. 2025, "Less is More: Improving LLM Alignment
via Preference Data Selection", its online form): a round samples 1 / `online.select_keep` times the pairs its
steps need, and keeps those both margins call clear, the scorer's r_w - r_l and the implicit DPO margin
b (d_w - d_l) of the policy that sampled the round against the run's reference (selection/selectors.py,
`dual_margin`). With iterative DPO's reference refresh (schedule.reference_update: hard every round) the
sampling policy is the reference, its implicit margin is zero, and the choice falls to the scorer's margin."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from prefalign.data.tokenize import TokenizedPair
from prefalign.models.logprobs import sequence_logps
from prefalign.models.reference import Reference
from prefalign.selection.selectors import PairScores, dual_margin

ImplicitMargins = Callable[[list[TokenizedPair]], np.ndarray]


def implicit_margin_fn(policy: torch.nn.Module, reference: Reference, collate: Callable, beta: float,
                       device: torch.device | str, batch_size: int = 32) -> ImplicitMargins:
    """b (d_w - d_l) per pair, from the policy as it is when called (eval mode, no gradient)."""
    @torch.no_grad()
    def margins(pairs: list[TokenizedPair]) -> np.ndarray:
        was_training = policy.training
        policy.eval()
        out = []
        for start in range(0, len(pairs), batch_size):
            idx = list(range(start, min(start + batch_size, len(pairs))))
            batch = collate([pairs[i] for i in idx], idx).to(device)
            d = sequence_logps(policy, batch.tokens).sum.float() - reference.logps(batch).float()
            n = batch.num_pairs
            out.append((beta * (d[:n] - d[n:])).cpu())
        policy.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0)
    return margins


def keep_dual_margin(pairs: list[TokenizedPair], implicit: np.ndarray, need: int) -> list[int]:
    """The `need` pairs of highest z(r_w - r_l) + z(b (d_w - d_l)), in their sampled order."""
    external = np.array([p.extras["score_chosen"] - p.extras["score_rejected"] for p in pairs], dtype=float)
    chosen = dual_margin(PairScores(len(pairs), external=external, implicit=implicit), min(need, len(pairs)))
    return chosen.kept.tolist()
