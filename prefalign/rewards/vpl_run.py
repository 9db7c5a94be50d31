"""`prefalign rm vpl` and `rm vpl-eval`: VPL (rewards/vpl.py) on pairs that name their user, with a sentence
encoder's frozen embeddings as features. The folder holds `vpl.safetensors` (weights) and `vpl.json` (the
sizes, the encoder and the training settings)."""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from safetensors.torch import load_file, save_file

from prefalign.atomic_files import replace_dir
from prefalign.data.errors import DataError
from prefalign.data.examples import PreferencePair
from prefalign.data.loading import read_pairs
from prefalign.models.sentence_embeddings import SentenceEncoder
from prefalign.rewards import vpl
from prefalign.rewards.inputs import plain_text


def pairs_by_user(source: str, user_column: str) -> dict[str, list[PreferencePair]]:
    out: dict[str, list[PreferencePair]] = defaultdict(list)
    for pair in read_pairs(source):
        if user_column not in pair.tags:
            raise DataError(pair.ref, user_column, "VPL needs the user of every pair (--user-column)", "missing_field")
        out[pair.tags[user_column]].append(pair)
    return dict(out)


def embed_comparisons(users: dict[str, list[tuple[str, str]]],
                      encoder: SentenceEncoder) -> dict[str, vpl.UserComparisons]:
    """Each user's (chosen text, rejected text) comparisons as features; every distinct text embedded once."""
    texts = sorted({t for pairs in users.values() for pair in pairs for t in pair})
    index = {t: i for i, t in enumerate(texts)}
    emb = encoder.embed(texts)
    return {u: vpl.UserComparisons(emb[[index[w] for w, _ in pairs]], emb[[index[lo] for _, lo in pairs]])
            for u, pairs in users.items()}


def featurise(users: dict[str, list[PreferencePair]], encoder: SentenceEncoder) -> dict[str, vpl.UserComparisons]:
    def text(pair: PreferencePair, side: str) -> str:
        return plain_text(pair.prompt) + plain_text(getattr(pair, side))
    return embed_comparisons({u: [(text(p, "chosen"), text(p, "rejected")) for p in pairs]
                              for u, pairs in users.items()}, encoder)


def train_vpl_folder(source: str, encoder: str, out: Path, user_column: str = "user", latent: int = 8,
                     steps: int = 1500, n_context: int = 4, n_target: int = 8, beta: float = 0.01,
                     lr: float = 1e-3, max_length: int = 64, seed: int = 0) -> dict:
    users = featurise(pairs_by_user(source, user_column), SentenceEncoder(encoder, max_length))
    model = vpl.train_vpl(list(users.values()), latent, steps, n_context, n_target, beta=beta, lr=lr, seed=seed)
    meta = {"dim": next(iter(users.values())).chosen.shape[1], "latent": latent, "hidden": 64, "encoder": encoder,
            "max_length": max_length, "user_column": user_column, "users": len(users), "steps": steps,
            "context": n_context, "targets": n_target, "beta": beta, "lr": lr, "seed": seed}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}-"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "vpl.safetensors"))
    (tmp / "vpl.json").write_text(json.dumps(meta, indent=1))
    replace_dir(tmp, out)
    return meta


def load_vpl(folder: Path) -> tuple[vpl.VPL, dict]:
    meta = json.loads((folder / "vpl.json").read_text())
    model = vpl.VPL(meta["dim"], meta["latent"], meta["hidden"])
    model.load_state_dict(load_file(str(folder / "vpl.safetensors")))
    return model.eval(), meta


def evaluate_vpl_folder(folder: Path, source: str, answers: int, group_column: str | None = None) -> dict:
    """Each user's first `answers` pairs infer their latent; accuracy on the rest, per user and per group."""
    model, meta = load_vpl(folder)
    users = pairs_by_user(source, meta["user_column"])
    short = sorted(u for u, pairs in users.items() if len(pairs) <= answers)
    if short:
        raise ValueError(f"{source}: {len(short)} users (e.g. {short[0]!r}) have no pair beyond their first "
                         f"{answers} answers")
    features = featurise(users, SentenceEncoder(meta["encoder"], meta["max_length"]))
    acc = {u: vpl.accuracy(model, vpl.UserComparisons(c.chosen[:answers], c.rejected[:answers]),
                           vpl.UserComparisons(c.chosen[answers:], c.rejected[answers:])) for u, c in features.items()}
    result = {"users": len(acc), "answers": answers, "accuracy": float(np.mean(list(acc.values())))}
    if group_column:
        groups: dict[str, list[float]] = defaultdict(list)
        for u, pairs in users.items():
            groups[pairs[0].tags.get(group_column, "?")].append(acc[u])
        result["by_group"] = {g: float(np.mean(v)) for g, v in sorted(groups.items())}
    return result
