"""`prefalign data select`: score the pairs, let a selector keep some, write the kept rows (labels flipped
where the selector says so, its columns added) and a report of what was kept and why."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np

from prefalign.atomic_files import write_text_atomic
from prefalign.data.readers import read_records
from prefalign.selection.selectors import SELECTORS, Selection

SWAPS = [("chosen", "rejected"), ("score_chosen", "score_rejected")]


def keep_count(keep: float, n: int) -> int:
    """`keep` as a fraction of the pairs (0 < keep <= 1) or a count (> 1)."""
    k = round(keep * n) if keep <= 1 else int(keep)
    if not 1 <= k <= n:
        raise ValueError(f"--keep {keep}: keeps {k} of {n} pairs; give a fraction in (0, 1] or a count up to {n}")
    return k


def _flip(fields: dict, where: str) -> dict:
    if "chosen" not in fields or "rejected" not in fields:
        raise ValueError(f"{where}: a flipped pair needs `chosen` and `rejected` fields to swap")
    out = dict(fields)
    for a, b in SWAPS:
        if a in fields and b in fields:
            out[a], out[b] = fields[b], fields[a]
    return out


def kept_rows(source: str, rows: list[int], selection: Selection) -> list[dict]:
    """The source's records of the kept pairs, in the data's order, flipped and with the selector's columns."""
    records = {r.ref.row: r for r in read_records(source)}
    flipped = set(selection.flipped.tolist())
    out = []
    for i in selection.kept.tolist():
        record = records[rows[i]]
        fields = _flip(record.fields, str(record.ref)) if i in flipped else dict(record.fields)
        fields.update({name: float(col[i]) for name, col in selection.columns.items()})
        out.append(fields)
    return out


def _mean(score: np.ndarray, idx: np.ndarray) -> float | None:
    values = score[idx]
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else None


def report(method: str, params: dict, rows: list[int], selection: Selection) -> dict:
    kept, flipped = set(selection.kept.tolist()), set(selection.flipped.tolist())
    dropped = np.array(sorted(set(range(len(rows))) - kept), dtype=int)
    return {"method": method, "params": params, "pairs": len(rows), "kept": len(kept), "flipped": len(flipped),
            "mean_score_kept": _mean(selection.score, selection.kept),
            "mean_score_dropped": _mean(selection.score, dropped),
            "rows": [{"row": rows[i], "kept": i in kept, "flipped": i in flipped,
                      "score": float(selection.score[i]) if np.isfinite(selection.score[i]) else None}
                     for i in range(len(rows))]}


def select_data(source: str, out: Path, method: str, keep: float, seed: int = 0, params: dict | None = None,
                **scorers: object) -> dict:
    """Write the kept rows to `out` (JSONL) and the report to `out` with .report.json; return the report."""
    from prefalign.data.loading import read_pairs
    from prefalign.selection.scores import pair_scores

    if method not in SELECTORS:
        raise ValueError(f"--method {method!r}: choose from {', '.join(SELECTORS)}")
    allowed = set(inspect.signature(SELECTORS[method].fn).parameters) - {"scores", "keep", "seed"}
    unknown = set(params or {}) - allowed
    if unknown:
        raise ValueError(f"--param {', '.join(sorted(unknown))}: {method} takes {', '.join(sorted(allowed)) or 'none'}")
    pairs = read_pairs(source)
    scores = pair_scores(source, pairs, SELECTORS[method].needs, method, seed=seed, **scorers)
    selection = SELECTORS[method].fn(scores, keep_count(keep, len(pairs)), seed, **(params or {}))
    rows = [p.ref.row for p in pairs]
    summary = report(method, params or {}, rows, selection)
    write_text_atomic(out, "".join(json.dumps(r) + "\n" for r in kept_rows(source, rows, selection)))
    write_text_atomic(out.with_suffix(".report.json"), json.dumps(summary, indent=1))
    return summary
