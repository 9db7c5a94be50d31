"""Context-aware preference models on the toy world's conflicting tastes (rewards/context_aware.py): the
taste stated as a sentence, seen phrasings and unseen ones (Janus's test), and the error split into context
selection and preference given the context. Part of docs/pluralistic.md (evaluation/pluralistic_table.py)."""

from __future__ import annotations

import random

import numpy as np
import torch

from prefalign.evaluation.vpl_eval import TASTES, user_rows
from prefalign.models.sentence_embeddings import SentenceEncoder
from prefalign.rewards import context_aware as cap
from prefalign.toy.reward_data import toy_reward_rows

SEEN = {"quality": ["give the most accurate and helpful answer", "i want a correct, high quality reply",
                    "focus on being right and on topic", "answer as well as you can"],
        "brief": ["keep it short", "answer in as few words as possible", "i prefer brief replies", "be concise"],
        "verbose": ["give a long, detailed answer", "i like lengthy replies", "write as much as you can",
                    "be thorough and elaborate"]}
UNSEEN = {"quality": ["make the answer good and relevant", "quality matters most to me"],
          "brief": ["no long answers please", "short and to the point"],
          "verbose": ["the longer the better", "please answer at great length"]}


def _embed_pairs(rows: list[dict], encoder: SentenceEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    return (encoder.embed([r["prompt"] + r["chosen"] for r in rows]),
            encoder.embed([r["prompt"] + r["rejected"] for r in rows]))


def _by_taste(values: dict[str, list[float]]) -> dict[str, float]:
    out = {t: float(np.mean(values[t])) for t in TASTES}
    out["worst"] = min(out.values())
    return out


def run_context(encoder_path: str, seed: int = 0, n_train: int = 3000, n_test: int = 900, n_users: int = 60,
                per_user: int = 20, answers: int = 4, steps: int = 1500) -> dict:
    encoder, rng = SentenceEncoder(encoder_path, 64), random.Random(seed)
    phrasings = {t: encoder.embed(SEEN[t] + UNSEEN[t]) for t in TASTES}
    seen = {t: e[:len(SEEN[t])] for t, e in phrasings.items()}
    unseen = {t: e[len(SEEN[t]):] for t, e in phrasings.items()}
    train = toy_reward_rows(n_train, seed=seed, users=TASTES)
    tw, tl = _embed_pairs(train, encoder)
    tc = torch.stack([seen[r["user"]][rng.randrange(len(SEEN[r["user"]]))] for r in train])
    model = cap.train_context_reward(tw, tl, tc, steps=steps, seed=seed)
    plain = cap.train_context_reward(tw, tl, tc[:, :0], steps=steps, seed=seed)
    test = toy_reward_rows(n_test, seed=seed + 1, held_out=True, users=TASTES)
    rows: dict[str, dict[str, list[float]]] = {name: {t: [] for t in TASTES} for name in
                                               ("no context", "context, seen phrasing", "context, unseen phrasing")}
    for taste in TASTES:
        part = [r for r in test if r["user"] == taste]
        w, lo = _embed_pairs(part, encoder)
        rows["no context"][taste].append(cap.pair_accuracy(plain, w, lo, torch.zeros(len(part), 0)))
        for c in seen[taste]:
            rows["context, seen phrasing"][taste].append(cap.pair_accuracy(model, w, lo, c.expand(len(part), -1)))
        for c in unseen[taste]:
            rows["context, unseen phrasing"][taste].append(cap.pair_accuracy(model, w, lo, c.expand(len(part), -1)))
    selection = select_for_users(model, encoder, unseen, seed, n_users, per_user, answers)
    return {"settings": {"train_pairs": n_train, "test_pairs": n_test, "users": n_users, "per_user": per_user,
                         "answers": answers, "steps": steps, "seed": seed,
                         "seen": SEEN, "unseen": UNSEEN},
            "rows": {name: _by_taste(v) for name, v in rows.items()} | selection}


def select_for_users(model: cap.ContextReward, encoder: SentenceEncoder, unseen: dict[str, torch.Tensor],
                     seed: int, n_users: int, per_user: int, answers: int) -> dict[str, dict[str, float]]:
    """New users on held-out prompts: pick one of the unseen phrasings from their first answers, then score
    their other pairs under it. Returns the selection accuracy and the served accuracy, by taste."""
    candidates = torch.cat([unseen[t] for t in TASTES])
    owner = [t for t in TASTES for _ in range(len(unseen[t]))]
    picked_right: dict[str, list[float]] = {t: [] for t in TASTES}
    served: dict[str, list[float]] = {t: [] for t in TASTES}
    for rows in user_rows(n_users, per_user, seed + 2, held_out=True).values():
        taste = rows[0]["taste"]
        w, lo = _embed_pairs(rows, encoder)
        k = cap.select_context(model, w[:answers], lo[:answers], candidates)
        picked_right[taste].append(float(owner[k] == taste))
        served[taste].append(cap.pair_accuracy(model, w[answers:], lo[answers:], candidates[k].expand(len(rows) - answers, -1)))
    return {"context selected from 4 answers: right taste": _by_taste(picked_right),
            "context selected from 4 answers: accuracy": _by_taste(served)}


def render_context(result: dict) -> list[str]:
    s = result["settings"]
    lines = ["", "## Stated contexts: context-aware preference models (and Janus-style unseen system messages)", "",
             f"A Bradley-Terry reward on frozen MiniLM features of the response and of a sentence stating the user's "
             f"taste (rewards/context_aware.py), trained on {s['train_pairs']} toy pairs of the three tastes, each "
             f"with one of {len(s['seen']['quality'])} phrasings of its taste (e.g. \"{s['seen']['brief'][0]}\"); "
             f"tested on {s['test_pairs']} pairs over held-out prompts with the seen phrasings and with "
             f"{len(s['unseen']['quality'])} unseen ones per taste (e.g. \"{s['unseen']['brief'][1]}\"), averaged "
             "over phrasings. Context selection: "
             f"{s['users']} new users pick, from their first {s['answers']} answers, the unseen phrasing "
             f"that explains them best; then their other {s['per_user'] - s['answers']} pairs are scored under it. "
             "Accuracy by taste (the selection rows: how often the picked phrasing is of the user's taste):", "",
             "| model | quality | brief | verbose | worst taste |", "|---|---:|---:|---:|---:|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['quality']:.3f} | {r['brief']:.3f} | {r['verbose']:.3f} | {r['worst']:.3f} |")
    lines += ["", "\"Right taste\" counts the taste a phrasing was written for; where it is low and the served accuracy "
              "high, the model reads that unseen phrasing as another taste (compare the unseen-phrasing row). "
              "Four phrasings per taste are few: Janus's claim is that many diverse system messages are what make "
              "unseen ones work."]
    return lines
