"""Several reward models as one: ensembles of their scores, and WARM's average of their weights.

Ensembles (Coste et al. 2024, "Reward Model Ensembles Help Mitigate Overoptimization"): mean, min (worst
case), or mean - k * std (uncertainty-weighted) of the members' rewards for the same responses.
WARM (Ramé et al. 2024, "WARM: On the Benefits of Weight Averaged Reward Models"): reward models fine-tuned
from one shared initialisation stay linearly connected, so the average of their weights is itself a good
reward model, as cheap to run as one."""

from __future__ import annotations

import torch

from prefalign.merging.merge import MergeRecipe, check_same_architecture, merge_modules
from prefalign.rewards.model import RewardModel


def combine_rewards(rewards: torch.Tensor, how: str = "mean", k: float = 1.0) -> torch.Tensor:
    """[members, N] rewards -> [N]: mean, min, or mean - k * std (std over members, unbiased)."""
    if how == "mean":
        return rewards.mean(0)
    if how == "min":
        return rewards.min(0).values
    if how == "mean_minus_std":
        return rewards.mean(0) - k * rewards.std(0, unbiased=True)
    raise ValueError(f"unknown ensemble reduction {how!r}; use mean, min or mean_minus_std")


def average_weights(models: list[RewardModel]) -> RewardModel:
    """WARM: a reward model whose every parameter is the mean of the members' (the `linear` merge that
    `prefalign merge` also runs). The members must share architecture and spec (same backbone, head and
    objectives): the parameter names and shapes are checked."""
    if not models:
        raise ValueError("WARM needs at least one reward model")
    labels = [f"reward model {i}" for i in range(len(models))]
    check_same_architecture(models, labels)
    for i, model in enumerate(models[1:], start=1):
        if model.spec != models[0].spec:
            raise ValueError(f"reward model {i} has another spec ({model.spec}) than reward model 0")
    return merge_modules(models, MergeRecipe("linear"), labels=labels)
