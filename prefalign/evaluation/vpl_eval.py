"""VPL on the toy world's users with conflicting tastes (quality, brief and verbose users: the gold reward,
shorter, longer), against one Bradley-Terry reward on the same frozen MiniLM features: held-out accuracy
per taste for new users, served from a few of their answers picked at random or by the latent's
uncertainty (BALD). Part of docs/pluralistic.md (evaluation/pluralistic_table.py)."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import torch

from prefalign.models.sentence_embeddings import SentenceEncoder
from prefalign.rewards import vpl
from prefalign.rewards.vpl_run import embed_comparisons
from prefalign.toy.reward_data import toy_reward_rows

TASTES = ("quality", "brief", "verbose")


def user_rows(n_users: int, per_user: int, seed: int, held_out: bool) -> dict[str, list[dict]]:
    """`per_user` comparisons for each of `n_users` users, their tastes in turn."""
    tastes = {f"u{seed}-{i}": TASTES[i % len(TASTES)] for i in range(n_users)}
    rows = toy_reward_rows(n_users * per_user * 2, seed=seed, held_out=held_out, tastes=tastes)
    by_user: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if len(by_user[r["user"]]) < per_user:
            by_user[r["user"]].append(r)
    short = [u for u in tastes if len(by_user[u]) < per_user]
    if short:
        raise ValueError(f"{len(short)} users drew fewer than {per_user} comparisons; draw more rows")
    return dict(by_user)


def featurise(groups: list[dict[str, list[dict]]], encoder: SentenceEncoder) -> list[dict[str, vpl.UserComparisons]]:
    """The groups' users (distinct ids) embedded in one pass, then split back into their groups."""
    every = embed_comparisons({u: [(r["prompt"] + r["chosen"], r["prompt"] + r["rejected"]) for r in rows]
                               for g in groups for u, rows in g.items()}, encoder)
    return [{u: every[u] for u in g} for g in groups]


def _taste_means(values: dict[str, float], taste_of: dict[str, str]) -> dict[str, float]:
    out = {t: float(np.mean([v for u, v in values.items() if taste_of[u] == t])) for t in TASTES}
    out["worst"] = min(out.values())
    return out


def served(model: vpl.VPL, users: dict[str, vpl.UserComparisons], n_context: int, pool: int, how: str,
           seed: int) -> dict[str, float]:
    """Per new user: accuracy on their comparisons after the first `pool`, z from `n_context` answers chosen
    among the first `pool` at random or by BALD."""
    out = {}
    for u, c in users.items():
        if how == "bald":
            picked = vpl.bald(model, c.chosen[:pool], c.rejected[:pool], seed=seed).argsort(descending=True)
            picked = picked[:n_context].tolist()
        else:
            picked = random.Random(f"{seed}-{u}").sample(range(pool), n_context)
        context = vpl.UserComparisons(c.chosen[picked], c.rejected[picked])
        out[u] = vpl.accuracy(model, context, vpl.UserComparisons(c.chosen[pool:], c.rejected[pool:]))
    return out


def run_vpl(encoder_path: str, seed: int = 0, n_train_users: int = 150, n_new_users: int = 60,
            per_user: int = 36, steps: int = 1500) -> dict:
    torch.manual_seed(seed)
    train_rows = user_rows(n_train_users, per_user, seed, held_out=False)
    new_rows = user_rows(n_new_users, per_user, seed + 1, held_out=True)
    train, new = featurise([train_rows, new_rows], SentenceEncoder(encoder_path, 64))
    taste_of = {u: rows[0]["taste"] for u, rows in new_rows.items()}
    model = vpl.train_vpl(list(train.values()), latent=8, steps=steps, seed=seed)
    plain = vpl.train_vpl(list(train.values()), latent=0, steps=steps, seed=seed)
    pool = 16
    rows = {"Bradley-Terry (no user latent)": served(plain, new, 1, pool, "random", seed)}
    for n in (1, 2, 4, 8):
        rows[f"VPL, {n} random answer{'s' * (n > 1)}"] = served(model, new, n, pool, "random", seed)
    for n in (1, 2, 4):
        rows[f"VPL, {n} answer{'s' * (n > 1)} picked by BALD"] = served(model, new, n, pool, "bald", seed)
    return {"settings": {"train_users": n_train_users, "new_users": n_new_users, "per_user": per_user,
                         "steps": steps, "pool": pool, "latent": 8, "seed": seed},
            "rows": {name: _taste_means(values, taste_of) for name, values in rows.items()}}


def render_vpl(result: dict) -> list[str]:
    s = result["settings"]
    lines = ["", "## User latents: VPL", "",
             f"VPL (rewards/vpl.py; latent {s['latent']}, beta 0.01, {s['steps']} episodes of 32 users with 4 "
             f"answers and 8 targets each) on {s['train_users']} toy users with {s['per_user']} comparisons each, "
             "their tastes in turn quality, brief and verbose (brief and verbose users disagree on every pair "
             "that differs in length); responses are frozen MiniLM embeddings of prompt and response. "
             f"{s['new_users']} new users on held-out prompts: each answers a few of their first {s['pool']} "
             f"comparisons (at random, or those with the highest BALD score under the prior) and is scored on "
             f"their other {s['per_user'] - s['pool']}. Accuracy by taste:", "",
             "| model | quality users | brief users | verbose users | worst taste |", "|---|---:|---:|---:|---:|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['quality']:.3f} | {r['brief']:.3f} | {r['verbose']:.3f} | {r['worst']:.3f} |")
    return lines
