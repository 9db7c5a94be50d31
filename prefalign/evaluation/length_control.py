"""Length-controlled win rates (Dubois et al. 2024, "Length-Controlled AlpacaEval: A Simple Way to Debias
Automatic Evaluators"), on annotation files in AlpacaEval's layout.

For each model m against the baseline, a logistic GLM of the judge's preference for m's output:

    logit P(m beats baseline | x) = theta * g + phi * tanh(delta_len / sd) + psi * difficulty_x

with g = 1 on m's own annotations (`not_gamed_baseline`), delta_len the baseline's length minus m's
(characters, as AlpacaEval), sd its standard deviation over m's annotations, and difficulty_x a
per-instruction effect. It is fit with an L1 penalty chosen by 5-fold cross-validation grouped by
instruction, no intercept, soft preferences in [0, 1] handled by weighting (each row twice, label 1 with
weight p and label 0 with weight 1 - p). The LC win rate is the mean predicted probability over m's
instructions with delta_len set to 0; its standard error is that of the mean of those predictions (as
AlpacaEval reports it; null where the predictions do not vary, as with one model and no instruction
difficulty, where it says nothing), and `lc_bootstrap_se` is the spread of the LC win rate over refits on
instructions resampled with replacement (at the penalty cross-validation chose), the estimate's own error.

When annotations of the baseline's own verbose and concise variants are given (generators
`<baseline>_verbose`, `<baseline>_concise`), they join every fit with g = 0 and sample weight lambda / 2
each (AlpacaEval's `length_controlled_v1`, lambda = 0.2): a variant that differs from the baseline only in
length pins phi, so a model cannot buy a higher LC win rate with length alone."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from prefalign.data.errors import DataError, RowRef

GAMED_SUFFIXES = ("_verbose", "_concise")
C_GRID = np.logspace(-4, 4, 10)  # LogisticRegressionCV's default grid


@dataclass(frozen=True)
class Annotation:
    """One judgement: `preference` = P(output_2 beats output_1), in [0, 1] (AlpacaEval's value minus 1)."""

    instruction: str
    output_1: str
    output_2: str
    generator_1: str
    generator_2: str
    preference: float
    difficulty: float | None = None


@dataclass
class LCWinRate:
    generator: str
    n: int
    win_rate: float  # percentages, as AlpacaEval prints them
    standard_error: float
    lc_win_rate: float
    lc_standard_error: float | None
    avg_length: float
    coefficients: dict[str, float]
    lc_bootstrap_se: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


# -- reading ------------------------------------------------------------------------------------------------

FIELDS = ("instruction", "output_1", "output_2", "generator_1", "generator_2", "preference")


def read_annotations(path: str | Path) -> tuple[list[Annotation], int]:
    """Annotations of one AlpacaEval-layout file (a JSON list of records) and the number of null preferences
    skipped. Preference 1 means output_1 won, 2 output_2, values between are soft, 0 is a tie (as AlpacaEval)."""
    path = str(path)
    try:
        records = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, None, f"not valid JSON ({exc})", "bad_json") from None
    if not isinstance(records, list):
        raise DataError(path, None, "expected a JSON list of annotation records", "mistyped_field")
    out, skipped = [], 0
    for i, rec in enumerate(records):
        ref = RowRef(path, i)
        if not isinstance(rec, dict):
            raise DataError(ref, None, "expected an object", "mistyped_field")
        for name in FIELDS:
            if name not in rec:
                raise DataError(ref, name, "missing", "missing_field")
        pref = rec["preference"]
        if pref is None:
            skipped += 1
            continue
        if isinstance(pref, bool) or not isinstance(pref, (int, float)) or not (pref == 0 or 1 <= pref <= 2):
            raise DataError(ref, "preference", f"expected a number in [1, 2] (or 0 for a tie, null to skip), "
                                               f"got {pref!r}", "mistyped_field")
        for name in FIELDS[:5]:
            if not isinstance(rec[name], str):
                raise DataError(ref, name, f"expected a string, got {type(rec[name]).__name__}", "mistyped_field")
        difficulty = rec.get("instruction_difficulty")
        if difficulty is not None and not isinstance(difficulty, (int, float)):
            raise DataError(ref, "instruction_difficulty", f"expected a number, got {difficulty!r}", "mistyped_field")
        out.append(Annotation(rec["instruction"], rec["output_1"], rec["output_2"], rec["generator_1"],
                              rec["generator_2"], 0.5 if pref == 0 else float(pref) - 1.0,
                              None if difficulty is None else float(difficulty)))
    return out, skipped


# -- the GLM ------------------------------------------------------------------------------------------------

def soft_log_loss(p_true: np.ndarray, p_pred: np.ndarray, weight: np.ndarray) -> float:
    p_pred = np.clip(p_pred, 1e-15, 1 - 1e-15)
    return float(-(weight * (p_true * np.log(p_pred) + (1 - p_true) * np.log(1 - p_pred))).sum() / weight.sum())


def fit_soft_logistic(x: np.ndarray, p: np.ndarray, weight: np.ndarray, c: float) -> LogisticRegression:
    """L1 logistic regression without intercept on soft labels: each row as label 1 with weight w * p and as
    label 0 with weight w * (1 - p)."""
    model = LogisticRegression(C=c, l1_ratio=1.0, solver="liblinear", fit_intercept=False, random_state=123)
    model.fit(np.concatenate([x, x]), np.r_[np.ones(len(x)), np.zeros(len(x))],
              sample_weight=np.r_[weight * p, weight * (1 - p)])
    return model


def fit_glm_cv(x: np.ndarray, p: np.ndarray, weight: np.ndarray, groups: np.ndarray,
               n_splits: int = 5) -> LogisticRegression:
    """The C of C_GRID with the lowest held-out soft log-loss over folds grouped by instruction, refit on all."""
    n_splits = min(n_splits, len(set(groups)))
    if n_splits < 2:
        return fit_soft_logistic(x, p, weight, C_GRID[-1])
    folds = list(GroupKFold(n_splits=n_splits).split(x, groups=groups))
    losses = [np.mean([soft_log_loss(p[te], fit_soft_logistic(x[tr], p[tr], weight[tr], c).predict_proba(x[te])[:, 1],
                                     weight[te]) for tr, te in folds]) for c in C_GRID]
    return fit_soft_logistic(x, p, weight, C_GRID[int(np.argmin(losses))])


def _std_delta(rows: list[Annotation]) -> np.ndarray:
    delta = np.array([len(a.output_1) - len(a.output_2) for a in rows], dtype=float)
    sd = delta.std(ddof=1) if len(delta) > 1 else 0.0
    return delta / sd if sd > 0 else np.zeros_like(delta)


def instruction_difficulty(annotations: list[Annotation], exclude: str | None = None) -> dict[str, float] | None:
    """Per-instruction difficulty: a column when every annotation has one; else, when several models were
    judged on the same instructions, the per-instruction effect of a joint logistic fit (one intercept per
    model, one effect per instruction, the length term), negated and centred so that higher is harder.

    `exclude`: leave that generator's annotations out of the estimate. The GLM of a model uses a difficulty
    estimated without its own judgements; otherwise the instruction effects would carry its outcomes into
    its own fit (with a few annotations per instruction they overfit them)."""
    given = {a.instruction: a.difficulty for a in annotations if a.difficulty is not None}
    if given and all(a.difficulty is not None for a in annotations):
        return given
    annotations = [a for a in annotations if a.generator_2 != exclude]
    models = sorted({a.generator_2 for a in annotations})
    instructions = sorted({a.instruction for a in annotations})
    shared = defaultdict(set)
    for a in annotations:
        shared[a.instruction].add(a.generator_2)
    if len(models) < 2 or not any(len(s) > 1 for s in shared.values()):
        return None
    m_idx = {m: i for i, m in enumerate(models)}
    i_idx = {x: i for i, x in enumerate(instructions)}
    by_model = defaultdict(list)
    for a in annotations:
        by_model[a.generator_2].append(a)
    rows = [a for m in models for a in by_model[m]]
    length = np.concatenate([_std_delta(by_model[m]) for m in models])
    x = np.zeros((len(rows), len(models) + len(instructions) + 1))
    for r, a in enumerate(rows):
        x[r, m_idx[a.generator_2]] = 1.0
        x[r, len(models) + i_idx[a.instruction]] = 1.0
    x[:, -1] = np.tanh(length)
    p = np.array([a.preference for a in rows])
    # L2 keeps the instruction effects (one per instruction, few annotations each) from running off.
    model = LogisticRegression(C=1.0, fit_intercept=False, max_iter=2000)
    model.fit(np.concatenate([x, x]), np.r_[np.ones(len(x)), np.zeros(len(x))], sample_weight=np.r_[p, 1 - p])
    effect = model.coef_[0][len(models):len(models) + len(instructions)]
    effect = -(effect - effect.mean())
    return dict(zip(instructions, effect.tolist()))


def _design(rows: list[Annotation], g: float, difficulty: dict[str, float] | None, zero_length: bool) -> np.ndarray:
    cols = [np.zeros(len(rows)) if zero_length else np.tanh(_std_delta(rows))]
    if difficulty is not None:
        cols.append(np.array([difficulty.get(a.instruction, 0.0) for a in rows]))
    cols.append(np.full(len(rows), g))
    return np.stack(cols, axis=1)


def bootstrap_lc_se(x: np.ndarray, p: np.ndarray, w: np.ndarray, groups: np.ndarray, own: int,
                    x_zero: np.ndarray, c: float, n_boot: int = 100, seed: int = 0) -> float:
    """Standard error (percentage points) of the LC win rate over `n_boot` refits at penalty `c`, each on the
    model's instructions (its first `own` rows) resampled with replacement; other rows (the baseline's
    gamed variants) are kept in every refit."""
    rng = np.random.default_rng(seed)
    by_instruction = defaultdict(list)
    for i, g in enumerate(groups[:own]):
        by_instruction[g].append(i)
    keys = sorted(by_instruction)
    if len(keys) < 2:
        return 0.0
    rates = []
    for _ in range(n_boot):
        rows = np.concatenate([by_instruction[keys[k]] for k in rng.integers(len(keys), size=len(keys))])
        take = np.r_[rows, np.arange(own, len(x))]
        fit = fit_soft_logistic(x[take], p[take], w[take], c)
        rates.append(fit.predict_proba(x_zero[rows])[:, 1].mean())
    return 100 * float(np.std(rates, ddof=1))


def length_controlled_win_rates(annotations: list[Annotation], regularize_to_baseline: float = 0.2,
                                n_splits: int = 5, n_boot: int = 100) -> list[LCWinRate]:
    """One result per generator_2 (the baseline's gamed variants included, each fit like a model)."""
    baselines = {a.generator_1 for a in annotations}
    if len(baselines) != 1:
        raise ValueError(f"all annotations must share one baseline (generator_1); found {sorted(baselines)}")
    baseline = baselines.pop()
    by_model: dict[str, list[Annotation]] = defaultdict(list)
    for a in annotations:
        by_model[a.generator_2].append(a)
    gamed = {m for m in by_model if m in (baseline + s for s in GAMED_SUFFIXES)}
    results = []
    for model_name, rows in by_model.items():
        difficulty = instruction_difficulty(annotations, exclude=model_name)
        names = ["length", *(["difficulty"] if difficulty is not None else []), "model"]
        x, p, w = [_design(rows, 1.0, difficulty, False)], [[a.preference for a in rows]], [np.ones(len(rows))]
        groups = [[a.instruction for a in rows]]
        if regularize_to_baseline:
            for other in sorted(gamed - {model_name}):
                g_rows = by_model[other]
                x.append(_design(g_rows, 0.0, difficulty, False))
                p.append([a.preference for a in g_rows])
                w.append(np.full(len(g_rows), regularize_to_baseline / 2))
                groups.append([a.instruction for a in g_rows])
        x, p, w, groups = (np.concatenate(x), np.concatenate(p).astype(float), np.concatenate(w),
                           np.array(sum(groups, [])))
        fit = fit_glm_cv(x, p, w, groups, n_splits)
        x_zero = _design(rows, 1.0, difficulty, True)
        predicted = fit.predict_proba(x_zero)[:, 1]
        raw = np.array([a.preference for a in rows])
        spread = 100 * _sem(predicted)
        results.append(LCWinRate(
            generator=model_name, n=len(rows), win_rate=100 * float(raw.mean()),
            standard_error=100 * _sem(raw), lc_win_rate=100 * float(predicted.mean()),
            lc_standard_error=spread if spread > 1e-9 else None,
            avg_length=float(np.mean([len(a.output_2) for a in rows])),
            coefficients=dict(zip(names, fit.coef_[0].tolist())),
            lc_bootstrap_se=bootstrap_lc_se(x, p, w, groups, len(rows), x_zero, fit.C, n_boot) if n_boot else 0.0))
    return results


def _sem(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0
