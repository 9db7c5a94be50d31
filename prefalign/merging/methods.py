"""Merge methods, registered by name (`prefalign merge --method`).

Each takes one parameter's values in every fine-tuned model, theta_i [M, ...], the base's theta_0 (None for
`linear`), the models' weights w_i and the settings, and returns the merged tensor. The delta methods work on
task vectors tau_i = theta_i - theta_0 and return theta_0 + tau_merged; TIES' and DARE's sparsification comes
from peft's merge utilities (`peft.utils.merge_utils`), the methods' reference implementation."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class MergeSettings:
    weights: torch.Tensor  # [M] one per model
    density: float = 1.0  # TIES and DARE: the fraction of each task vector kept
    seed: int = 0  # DARE's random drop
    sign_method: str = "total"  # TIES' sign election: by summed magnitude ("total") or by count ("frequency")


MergeFn = Callable[[torch.Tensor, "torch.Tensor | None", MergeSettings], torch.Tensor]
MERGE_METHODS: dict[str, MergeFn] = {}
NEEDS_BASE: set[str] = set()
PAIRED: set[str] = set()  # methods whose models come in (plus, minus) pairs, one weight per pair


def register(name: str, needs_base: bool = True, paired: bool = False) -> Callable[[MergeFn], MergeFn]:
    def add(fn: MergeFn) -> MergeFn:
        MERGE_METHODS[name] = fn
        if needs_base:
            NEEDS_BASE.add(name)
        if paired:
            PAIRED.add(name)
        return fn
    return add


def _per_model(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return weights.to(like.dtype).view(-1, *[1] * (like.dim() - 1))


@register("linear", needs_base=False)
def linear(thetas: torch.Tensor, base: torch.Tensor | None, s: MergeSettings) -> torch.Tensor:
    """Model soups (Wortsman et al. 2022), WARM for reward models (Ramé et al. 2024):
    theta = sum_i w_i theta_i / sum_i w_i, a weighted average of the weights themselves."""
    w = _per_model(s.weights, thetas)
    return (w * thetas).sum(0) / w.sum()


@register("task_arithmetic")
def task_arithmetic(thetas: torch.Tensor, base: torch.Tensor, s: MergeSettings) -> torch.Tensor:
    """Task arithmetic (Ilharco et al. 2023, "Editing Models with Task Arithmetic"):
    theta = theta_0 + sum_i w_i (theta_i - theta_0); the weights are scaling coefficients, not normalised."""
    return base + (_per_model(s.weights, thetas) * (thetas - base)).sum(0)


@register("preference_vectors", paired=True)
def preference_vectors(thetas: torch.Tensor, base: torch.Tensor, s: MergeSettings) -> torch.Tensor:
    """Preference vectors (Liang et al. 2025, "Adaptive Helpfulness-Harmlessness Alignment with Preference
    Vectors"): per preference k, a model trained on it (theta_k+) and one on the same pairs reversed
    (theta_k-); its preference vector phi_k = theta_k+ - theta_k- is the behaviour shift alone, and a user
    merges them at test time with their own coefficients:
        theta = theta_0 + sum_k eta_k phi_k
    Models come in (plus, minus) order; one weight eta_k per pair."""
    phi = thetas[0::2] - thetas[1::2]
    return base + (_per_model(s.weights, phi) * phi).sum(0)


@register("ties")
def ties(thetas: torch.Tensor, base: torch.Tensor, s: MergeSettings) -> torch.Tensor:
    """TIES-Merging (Yadav et al. 2023): trim each tau_i to its `density` largest magnitudes, elect each
    entry's sign (the sign of sum_i w_i tau_i), and average the weighted entries that agree with it:
    tau = sum_{i: sign agrees} w_i tau_i / #{i: sign agrees}."""
    from peft.utils.merge_utils import ties as peft_ties

    with _no_density_warning():
        tau = peft_ties(list(thetas - base), s.weights.to(thetas.dtype), s.density, s.sign_method)
    return base + tau


def _seeded(fn: Callable[[], torch.Tensor], seed: int) -> torch.Tensor:
    """peft's DARE draws from the global RNG; a forked, seeded one keeps merges reproducible and leaves the
    caller's RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


@contextmanager
def _no_density_warning() -> Iterator[None]:
    """peft warns for every tensor when density is 1 (nothing to trim), which is a valid choice here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The density .* no pruning will be performed")
        yield


@register("dare_linear")
def dare_linear(thetas: torch.Tensor, base: torch.Tensor, s: MergeSettings) -> torch.Tensor:
    """DARE (Yu et al. 2024, "Language Models are Super Mario"): drop each entry of tau_i with probability
    1 - density, rescale the rest by 1 / density (so E[tau] is unchanged), then task arithmetic."""
    from peft.utils.merge_utils import dare_linear as peft_dare

    return base + _seeded(lambda: peft_dare(list(thetas - base), s.weights.to(thetas.dtype), s.density), s.seed)


@register("dare_ties")
def dare_ties(thetas: torch.Tensor, base: torch.Tensor, s: MergeSettings) -> torch.Tensor:
    """DARE's random drop and rescale, then TIES' sign election and disjoint mean."""
    from peft.utils.merge_utils import dare_ties as peft_dare_ties

    with _no_density_warning():
        return base + _seeded(lambda: peft_dare_ties(list(thetas - base), s.weights.to(thetas.dtype), s.density,
                                                     s.sign_method), s.seed)
