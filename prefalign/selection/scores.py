"""The per-pair margins selectors read, all in the data's pair order: a reward model's or the data's own
(external), a DPO model's against its reference (implicit), several reward models' (ensemble)."""

from __future__ import annotations

import numpy as np

from prefalign.data.examples import PreferencePair
from prefalign.rewards.evaluate import score_with_implicit_reward, score_with_reward_model
from prefalign.rewards.inputs import plain_text
from prefalign.selection.folds import FoldRuns, out_of_fold_margins
from prefalign.selection.selectors import SCORE_HELP, PairScores


def column_margin(pairs: list[PreferencePair], column: str) -> np.ndarray:
    """A margin from the data: `column` itself, or score_chosen - score_rejected for column 'score'."""
    def one(p: PreferencePair) -> float:
        if column == "score":
            if "score_chosen" not in p.extras or "score_rejected" not in p.extras:
                raise ValueError(f"{p.ref}: no numeric score_chosen and score_rejected for --margin-column score")
            return p.extras["score_chosen"] - p.extras["score_rejected"]
        if column not in p.extras:
            raise ValueError(f"{p.ref}: no numeric column {column!r}")
        return p.extras[column]
    return np.array([one(p) for p in pairs], dtype=float)


def prompt_complexity(pairs: list[PreferencePair], column: str | None) -> np.ndarray:
    """A judge's complexity column or, without one, each prompt's length in words (deita's baseline)."""
    if column is not None:
        return column_margin(pairs, column)
    return np.array([len(plain_text(p.prompt).split()) for p in pairs], dtype=float)


def pair_embeddings(pairs: list[PreferencePair], encoder: str, max_length: int) -> np.ndarray:
    """[N, D] unit sentence embeddings of each pair's prompt followed by its chosen response."""
    from prefalign.models.sentence_embeddings import SentenceEncoder

    texts = [f"{plain_text(p.prompt)} {plain_text(p.chosen)}" for p in pairs]
    return SentenceEncoder(encoder, min(max_length, 256)).embed(texts).numpy().astype(np.float64)


def _aligned(pairs: list[PreferencePair], scored_pairs: list[PreferencePair], margins: np.ndarray) -> np.ndarray:
    if [p.ref.row for p in scored_pairs] != [p.ref.row for p in pairs]:
        raise ValueError("a scorer could not read every pair (rows too long or malformed); fix or filter them first")
    return np.asarray(margins, dtype=float)


def pair_scores(source: str, pairs: list[PreferencePair], needs: tuple[str, ...], selector: str,
                reward_model: str | None = None, margin_column: str | None = None, policy: str | None = None,
                reference: str | None = None, beta: float = 0.1, ensemble: list[str] | None = None,
                max_length: int = 512, fold_runs: dict | None = None, seed: int = 0,
                complexity_column: str | None = None, encoder: str | None = None) -> PairScores:
    """The scores `needs` names (and only those: scoring runs models), from the options given for them;
    every missing option is reported before any model runs."""
    given = {"external": reward_model or margin_column, "implicit": policy and reference, "entropy": policy,
             "ensemble": ensemble, "out_of_fold": reference, "complexity": True, "embedding": encoder}
    for name in needs:
        if not given[name]:
            raise ValueError(f"selector {selector!r} needs {SCORE_HELP[name]}")
    if reward_model and margin_column:
        raise ValueError("give an external margin once: --reward-model or --margin-column")
    scores = PairScores(len(pairs))
    if "external" in needs and reward_model:
        scored = score_with_reward_model(reward_model, source, max_length)
        scores.external = _aligned(pairs, scored.pairs, scored.margins)
    elif "external" in needs:
        scores.external = column_margin(pairs, str(margin_column))
    if "implicit" in needs or "entropy" in needs:  # one pass gives both
        scored = score_with_implicit_reward(str(policy), str(reference or policy), source, beta, max_length)
        if "implicit" in needs:
            scores.implicit = _aligned(pairs, scored.pairs, scored.margins)
        if "entropy" in needs:
            scores.entropy = -_aligned(pairs, scored.pairs, scored.policy_logps).mean(1)
    if "ensemble" in needs:
        members = [score_with_reward_model(folder, source, max_length) for folder in ensemble or []]
        scores.ensemble = np.stack([_aligned(pairs, m.pairs, m.margins) for m in members])
    if "out_of_fold" in needs:
        runs = FoldRuns(str(reference), beta=beta, max_length=max_length, seed=seed, **(fold_runs or {}))
        scores.out_of_fold = out_of_fold_margins(source, pairs, runs)
    if "complexity" in needs:
        scores.complexity = prompt_complexity(pairs, complexity_column)
    if "embedding" in needs:
        scores.embedding = pair_embeddings(pairs, str(encoder), max_length)
    return scores
