"""MaxMin-RLHF (Chakraborty et al. 2024, "MaxMin-RLHF: Alignment with Diverse Human Preferences").

The users behind a preference dataset fall into a few groups whose tastes differ, and which group a user is in
is not given. EM over users, with hard assignments as in the paper's Algorithm 1:

    M-step  a Bradley-Terry reward model r_k per group, on the pairs of the users assigned to it;
    E-step  each user to the group whose model explains their pairs best: argmax_k sum log s(r_k(y_w) - r_k(y_l)).

Two choices of ours: the E-step scores each user on held-out pairs (half of each user's pairs train, the other
half assign), and EM starts from one pooled model's fit of each user rather than from a random split.

The policy then serves the worst-off group (Algorithm 2): each batch of rollouts is scored by the group whose
mean reward on that batch is lowest. Bradley-Terry fixes a reward only up to a shift and a scale, so every
group's reward is standardised by its mean and std over its own training responses before groups compare.
`prefalign rm groups` fits the groups; the scorer `maxmin:FOLDER` serves them to the online and RL loops."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from rich.console import Console
from torch import tensor

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import RewardTrainConfig
from prefalign.data.loading import read_pairs
from prefalign.data.readers import read_records
from prefalign.rewards.evaluate import score_with_reward_model
from prefalign.rewards.inputs import plain_text
from prefalign.rewards.scoring import RewardScorer
from prefalign.rewards.train import train_reward_model

GROUPS_FILE = "groups.json"


@dataclass
class GroupFit:
    assignment: dict[str, int]  # user -> group
    rounds: list[dict]  # per EM round: log-likelihood, users that changed group, group sizes
    folders: list[Path]  # the reward model of each group


STARTS = ("pooled", "random")


def initial_assignment(users: list[str], groups: int, seed: int) -> dict[str, int]:
    """A random balanced start: the users shuffled and dealt to the groups in turn."""
    order = sorted(users)
    random.Random(seed).shuffle(order)
    return {u: i % groups for i, u in enumerate(order)}


def pooled_assignment(per_pair_loglik: dict[str, float], groups: int) -> dict[str, int]:
    """A start from one reward model on everyone's pairs: the users ranked by how well it explains them (mean
    log-likelihood per pair) and cut into `groups` runs of equal size, best explained first. The majority's taste
    dominates a pooled model, so the users it fits worst are the likeliest minority; a random start instead gives
    every group the same mixture, and EM then has no difference between the groups to grow from."""
    order = sorted(per_pair_loglik, key=lambda u: (-per_pair_loglik[u], u))
    return {u: i * groups // len(order) for i, u in enumerate(order)}


def user_log_likelihoods(folder: Path, source: str, user_column: str, max_length: int,
                         per_pair: bool = False) -> dict[str, float]:
    """Per user, sum over their pairs of log s(r(y_w) - r(y_l)) under one reward model (or the mean, per_pair)."""
    scored = score_with_reward_model(str(folder), source, max_length)
    out: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for pair, logp in zip(scored.pairs, F.logsigmoid(tensor(scored.margins)).tolist()):
        out[pair.tags[user_column]] += logp
        count[pair.tags[user_column]] += 1
    return {u: v / count[u] for u, v in out.items()} if per_pair else dict(out)


def reassign(loglik: list[dict[str, float]], assignment: dict[str, int]) -> dict[str, int]:
    """The E-step; a group left with no user takes the user whose move there costs the least log-likelihood,
    so that no reward model is trained on nothing."""
    new = {u: int(np.argmax([ll[u] for ll in loglik])) for u in assignment}
    for k in range(len(loglik)):
        if k not in new.values():
            worst = min(new, key=lambda u: loglik[new[u]][u] - loglik[k][u])
            new[worst] = k
    return new


def write_group_data(source: str, user_column: str, assignment: dict[str, int], out: Path) -> list[Path]:
    """One JSONL per group with its users' rows, as the source wrote them."""
    rows: dict[int, list[str]] = defaultdict(list)
    for record in read_records(source):
        user = str(record.fields.get(user_column))
        rows[assignment[user]].append(json.dumps(record.fields) + "\n")
    paths = []
    for k in sorted(set(assignment.values())):
        paths.append(out / f"group{k}.jsonl")
        write_text_atomic(paths[-1], "".join(rows[k]))
    return paths


def split_halves(source: str, user_column: str, out: Path) -> tuple[Path, Path]:
    """Each user's rows dealt in turn to out/fit.jsonl and out/held.jsonl (a user's only row goes to both).
    EM scores a user on pairs their group's model never trained on: scored on its own training pairs, a model
    that memorised them keeps every user where they are, and EM stops in its first round."""
    halves: tuple[list[str], list[str]] = ([], [])
    seen: dict[str, list[str]] = defaultdict(list)
    for record in read_records(source):
        seen[str(record.fields.get(user_column))].append(json.dumps(record.fields) + "\n")
    for rows in seen.values():
        halves[0].extend(rows[0::2])
        halves[1].extend(rows[1::2] or rows)
    paths = (out / "fit.jsonl", out / "held.jsonl")
    for path, rows in zip(paths, halves):
        write_text_atomic(path, "".join(rows))
    return paths


def fit_groups(cfg: RewardTrainConfig, groups: int, rounds: int, out: Path, seed: int = 0,
               console: Console | None = None, start: str = "pooled") -> GroupFit:
    """EM over the users of cfg.data.train (their ids in reward.user_column) from a pooled or random start.
    Each round trains a model per group on half of its users' pairs and reassigns every user by the other half;
    the final groups' models are then trained on all their pairs. Writes out/group{k}/, out/groups.json and the
    EM's working files (out/em/)."""
    if start not in STARTS:
        raise ValueError(f"start {start!r}: known starts are {', '.join(STARTS)}")
    source, column = cfg.data.train, cfg.reward.user_column
    pairs = read_pairs(source)
    missing = next((p.ref for p in pairs if column not in p.tags), None)
    if missing is not None:
        raise ValueError(f"{missing}: no {column!r} column; the groups are fitted over users (reward.user_column)")
    users = sorted({p.tags[column] for p in pairs})
    if len(users) < groups:
        raise ValueError(f"{source}: {len(users)} users for {groups} groups; give fewer groups")
    work = out / "em"
    work.mkdir(parents=True, exist_ok=True)
    fit_half, held_half = split_halves(source, column, work)
    loglik_of = partial(user_log_likelihoods, source=str(held_half), user_column=column,
                        max_length=cfg.data.max_length)
    if start == "pooled":
        assignment = pooled_assignment(loglik_of(train_group(cfg, fit_half, work / "pooled"), per_pair=True), groups)
    else:
        assignment = initial_assignment(users, groups, seed)
    history: list[dict] = []
    for r in range(rounds):
        files = write_group_data(str(fit_half), column, assignment, work)
        loglik = [loglik_of(train_group(cfg, f, work / f"group{k}")) for k, f in enumerate(files)]
        new = reassign(loglik, assignment)
        history.append({"round": r + 1, "log_likelihood": float(sum(loglik[assignment[u]][u] for u in users)),
                        "changed": sum(new[u] != assignment[u] for u in users),
                        "sizes": [list(assignment.values()).count(k) for k in range(groups)]})
        if console:
            console.print(f"EM round {r + 1}: {json.dumps(history[-1])}", markup=False)
        assignment = new
        if history[-1]["changed"] == 0:
            break
    files = write_group_data(source, column, assignment, out)
    folders = [train_group(cfg, f, out / f"group{k}") for k, f in enumerate(files)]
    write_groups_file(out, pairs, assignment, history, folders)
    return GroupFit(assignment, history, folders)


def train_group(cfg: RewardTrainConfig, data: Path, out: Path) -> Path:
    group_cfg = cfg.model_copy(update={
        "data": cfg.data.model_copy(update={"train": str(data), "eval": None, "eval_fraction": 0.0}),
        "trainer": cfg.trainer.model_copy(update={"output_dir": str(out), "progress": False})})
    return train_reward_model(group_cfg, console=Console(quiet=True), overwrite=True).model_dir


def write_groups_file(out: Path, pairs: list, assignment: dict[str, int], history: list[dict],
                      folders: list[Path]) -> None:
    """The assignment, the EM history, and each group's reward model with its standardisation."""
    prompts = [plain_text(p.prompt) for p in pairs for _ in (0, 1)]
    responses = [plain_text(r) for p in pairs for r in (p.chosen, p.rejected)]
    models = []
    for folder in folders:
        scores = np.array(RewardScorer(str(folder)).score(prompts, responses))
        models.append({"folder": str(folder.relative_to(out)), "mean": float(scores.mean()),
                       "std": float(scores.std()) or 1.0})
    write_text_atomic(out / GROUPS_FILE, json.dumps({"models": models, "assignment": assignment,
                                                     "rounds": history}, indent=2))


class MaxMinScorer:
    """The online/RL scorer `maxmin:FOLDER`: every response of a call scored by the standardised reward of the
    group whose mean standardised reward over the call is lowest (the worst-off group, Algorithm 2)."""

    def __init__(self, folder: str) -> None:
        path = Path(folder) / GROUPS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{folder}: no {GROUPS_FILE}; fit the groups with `prefalign rm groups` first")
        spec = json.loads(path.read_text())
        self.models = [(RewardScorer(str(Path(folder) / m["folder"])), m["mean"], m["std"]) for m in spec["models"]]
        self.last_group = -1

    def group_rewards(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """[K, N] standardised rewards."""
        return np.array([(np.array(m.score(prompts, responses)) - mu) / sd for m, mu, sd in self.models])

    def score(self, prompts: list[str], responses: list[str], seed: int) -> list[float]:
        z = self.group_rewards(prompts, responses)
        self.last_group = int(np.argmin(z.mean(axis=1)))
        return z[self.last_group].tolist()
