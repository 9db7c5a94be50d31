"""MaxMin-RLHF (Chakraborty et al. 2024, "MaxMin-RLHF: Alignment with Diverse Human Preferences").

The users behind a preference dataset fall into a few groups whose tastes differ, and which group a user is in
is not given. EM over users, with hard assignments as in the paper's Algorithm 1:

    M-step  a Bradley-Terry reward model r_k per group, on the pairs of the users assigned to it;
    E-step  each user to the group whose model explains their pairs best: argmax_k sum log s(r_k(y_w) - r_k(y_l)).

The policy then serves the worst-off group (Algorithm 2): each batch of rollouts is scored by the group whose
mean reward on that batch is lowest. Bradley-Terry fixes a reward only up to a shift and a scale, so every
group's reward is standardised by its mean and std over its own training responses before groups compare.
`prefalign rm groups` fits the groups; the scorer `maxmin:FOLDER` serves them to the online and RL loops."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
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


def initial_assignment(users: list[str], groups: int, seed: int) -> dict[str, int]:
    """A random balanced start: the users shuffled and dealt to the groups in turn."""
    order = sorted(users)
    random.Random(seed).shuffle(order)
    return {u: i % groups for i, u in enumerate(order)}


def user_log_likelihoods(folder: Path, source: str, user_column: str, max_length: int) -> dict[str, float]:
    """Per user, sum over their pairs of log s(r(y_w) - r(y_l)) under one reward model."""
    scored = score_with_reward_model(str(folder), source, max_length)
    out: dict[str, float] = defaultdict(float)
    for pair, logp in zip(scored.pairs, F.logsigmoid(tensor(scored.margins)).tolist()):
        out[pair.tags[user_column]] += logp
    return out


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


def fit_groups(cfg: RewardTrainConfig, groups: int, rounds: int, out: Path, seed: int = 0,
               console: Console | None = None) -> GroupFit:
    """EM over the users of cfg.data.train (their ids in reward.user_column); writes out/group{k}/ (a reward
    run per group, the last round's) and out/groups.json."""
    source, column = cfg.data.train, cfg.reward.user_column
    pairs = read_pairs(source)
    missing = next((p.ref for p in pairs if column not in p.tags), None)
    if missing is not None:
        raise ValueError(f"{missing}: no {column!r} column; the groups are fitted over users (reward.user_column)")
    users = sorted({p.tags[column] for p in pairs})
    if len(users) < groups:
        raise ValueError(f"{source}: {len(users)} users for {groups} groups; give fewer groups")
    assignment, history = initial_assignment(users, groups, seed), []
    out.mkdir(parents=True, exist_ok=True)
    for r in range(rounds):
        files = write_group_data(source, column, assignment, out)
        folders = [train_group(cfg, f, out / f"group{k}") for k, f in enumerate(files)]
        loglik = [user_log_likelihoods(f, source, column, cfg.data.max_length) for f in folders]
        new = reassign(loglik, assignment)
        history.append({"round": r + 1, "log_likelihood": float(sum(loglik[assignment[u]][u] for u in users)),
                        "changed": sum(new[u] != assignment[u] for u in users),
                        "sizes": [list(assignment.values()).count(k) for k in range(groups)]})
        if console:
            console.print(f"EM round {r + 1}: {json.dumps(history[-1])}", markup=False)
        if history[-1]["changed"] == 0 or r == rounds - 1:
            break  # the saved models are those of `assignment`; the last round's `changed` says if EM had converged
        assignment = new
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
        scores = np.array(score_in_batches(RewardScorer(str(folder)), prompts, responses))
        models.append({"folder": str(folder.relative_to(out)), "mean": float(scores.mean()),
                       "std": float(scores.std()) or 1.0})
    write_text_atomic(out / GROUPS_FILE, json.dumps({"models": models, "assignment": assignment,
                                                     "rounds": history}, indent=2))


def score_in_batches(scorer: RewardScorer, prompts: list[str], responses: list[str], size: int = 128) -> list[float]:
    return [s for i in range(0, len(prompts), size) for s in scorer.score(prompts[i:i + size], responses[i:i + size])]


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
        return np.array([(np.array(score_in_batches(m, prompts, responses)) - mu) / sd for m, mu, sd in self.models])

    def score(self, prompts: list[str], responses: list[str], seed: int) -> list[float]:
        z = self.group_rewards(prompts, responses)
        self.last_group = int(np.argmin(z.mean(axis=1)))
        return z[self.last_group].tolist()
