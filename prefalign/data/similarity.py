"""`prefalign data similarity`: per pair, how alike the chosen and rejected responses are, written as a
numeric column next to the source's own fields (JSONL). PCRM's prior reads it (`similarity: column`).

The value is the cosine similarity of the two responses' sentence embeddings, clamped to [0, 1] as in the
paper's DPO code (a negative cosine counts as no likeness at all)."""

from __future__ import annotations

import json
from pathlib import Path

from prefalign.atomic_files import write_text_atomic
from prefalign.data.loading import read_pairs
from prefalign.data.readers import read_records
from prefalign.models.sentence_embeddings import SentenceEncoder
from prefalign.rewards.inputs import plain_text


def write_response_similarity(source: str, encoder: str, out: Path, column: str = "similarity",
                              max_length: int = 256) -> dict:
    """Write every row of `source` with `column` added to `out`; return a summary of the values."""
    pairs = read_pairs(source)
    records = {r.ref.row: r for r in read_records(source)}
    clash = next((p.ref for p in pairs if column in records[p.ref.row].fields), None)
    if clash is not None:
        raise ValueError(f"{clash}: the row already has a field {column!r}; name another with --column")
    sims = SentenceEncoder(encoder, max_length).similarity([plain_text(p.chosen) for p in pairs],
                                                           [plain_text(p.rejected) for p in pairs]).clamp(0, 1)
    rows = [{**records[p.ref.row].fields, column: round(float(s), 6)} for p, s in zip(pairs, sims)]
    write_text_atomic(out, "".join(json.dumps(r) + "\n" for r in rows))
    return {"pairs": len(rows), "mean": float(sims.mean()) if len(rows) else None,
            "min": float(sims.min()) if len(rows) else None, "max": float(sims.max()) if len(rows) else None}
