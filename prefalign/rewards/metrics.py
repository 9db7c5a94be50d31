"""How good is a reward model (or a policy's implicit reward): accuracy, per subset and section, calibration,
and a policy's ranking accuracy. Inputs are plain arrays of per-pair values."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def pair_accuracy(margins: np.ndarray) -> float:
    """Share of pairs with r_w > r_l; an exact tie counts half (a scorer that cannot tell gets 0.5)."""
    m = np.asarray(margins, dtype=float)
    return float(((m > 0) + 0.5 * (m == 0)).mean())


def subset_accuracies(margins: np.ndarray, subsets: list[str]) -> dict[str, dict[str, float]]:
    """{subset: {"accuracy", "ece", "n"}}: with annotator groups as subsets, the calibration of each group
    (MORE, Zeng et al. 2023, reports a reward model's calibration per group: one ECE over the pooled pairs can
    hide a group whose confidences are far off)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for m, s in zip(np.asarray(margins, dtype=float), subsets):
        groups[s].append(m)
    return {s: {"accuracy": pair_accuracy(np.array(v)), "ece": expected_calibration_error(np.array(v)), "n": len(v)}
            for s, v in sorted(groups.items())}


def section_scores(per_subset: dict[str, dict[str, float]], sections: dict[str, list[str]]) -> dict[str, float]:
    """RewardBench's aggregation: a section's score is the mean of its subsets' accuracies weighted by their
    example counts; the overall score is the unweighted mean of the sections."""
    out = {}
    for section, names in sections.items():
        present = [per_subset[n] for n in names if n in per_subset]
        if present:
            out[section] = sum(p["accuracy"] * p["n"] for p in present) / sum(p["n"] for p in present)
    if out:
        out["overall"] = float(np.mean(list(out.values())))
    return out


def expected_calibration_error(margins: np.ndarray, bins: int = 10) -> float:
    """ECE of p = s(r_w - r_l) read as a prediction of which response humans chose: per pair the confidence
    max(p, 1 - p) and whether that prediction is right; bins of equal width over confidence in [0.5, 1];
    ECE = sum_b (n_b / N) |accuracy_b - confidence_b|."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=float)))
    confidence = np.maximum(p, 1 - p)
    correct = (p > 0.5).astype(float) + 0.5 * (p == 0.5)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        on = which == b
        if on.any():
            ece += on.mean() * abs(correct[on].mean() - confidence[on].mean())
    return float(ece)


def ranking_accuracy(logp_chosen: np.ndarray, logp_rejected: np.ndarray) -> float:
    """Chen et al. 2024, "Preference Learning Algorithms Do Not Learn Preference Rankings": how often the
    policy itself ranks the pair right, pi(y_w | x) > pi(y_l | x) (summed log-probs, no reference)."""
    return pair_accuracy(np.asarray(logp_chosen) - np.asarray(logp_rejected))
