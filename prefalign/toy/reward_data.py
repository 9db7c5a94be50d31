"""Toy preference data for reward models, written straight from the toy world (no sampling from a model, so
it is instant): two responses of mixed quality per prompt, ordered by the gold reward.

Columns: `quality` (the gold reward) and `brevity` (+1 where the chosen response is better on that objective, -1 where worse,
0 for a tie), for multi-objective reward models; with `users`, each row also names a user, drawn from those
given, whose taste decides the order: `quality` users prefer the higher gold reward, `brief` users the
shorter response, `verbose` users the longer one (for pluralistic reward models)."""

from __future__ import annotations

import random

from prefalign.toy.gold_reward import brevity_reward, gold_reward
from prefalign.toy.world import random_attributes, respond, split_prompts

USERS = {"quality": gold_reward, "brief": brevity_reward, "verbose": lambda p, r: -brevity_reward(p, r)}


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def toy_reward_rows(n: int, seed: int = 0, held_out: bool = False, users: tuple[str, ...] = (),
                    tastes: dict[str, str] | None = None) -> list[dict]:
    """`n` rows over the training prompts (or the held-out prompts of the toy split). `tastes` maps user ids
    to tastes instead (for groups to be found from the users): `user` is then the id and `taste` its taste."""
    rng = random.Random(seed)
    train, held = split_prompts()
    prompts = held if held_out else train
    users = tuple(tastes) if tastes else users
    rows: list[dict] = []
    while len(rows) < n:
        prompt = rng.choice(prompts)
        a, b = (respond(prompt, random_attributes(rng), rng) for _ in range(2))
        user = rng.choice(users) if users else "quality"
        taste = USERS[tastes[user] if tastes else user]
        if a == b or taste(prompt, a) == taste(prompt, b):
            continue
        chosen, rejected = (a, b) if taste(prompt, a) > taste(prompt, b) else (b, a)
        row = {"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected,
               "quality": _sign(gold_reward(prompt, chosen) - gold_reward(prompt, rejected)),
               "brevity": _sign(brevity_reward(prompt, chosen) - brevity_reward(prompt, rejected))}
        if users:
            row["user"] = user
        if tastes:
            row["taste"] = tastes[user]
        rows.append(row)
    return rows
