"""Reward over-optimisation on the toy task, in the spirit of Gao et al. 2023 ("Scaling Laws for Reward Model
Overoptimization"): GRPO against a reward model trained on few toy pairs, with the proxy (that reward model)
and the gold reward of the policy's own samples recorded against KL(policy || base) as training goes on.

The reward model is a Bradley-Terry head on the toy base, trained on `n_pairs` gold-labelled best-vs-worst
pairs of base samples. The RL reward is that model alone; the gold reward is a weight-0 term, scored and
logged but not learned from. KL is the k3 estimate on the samples, summed over tokens (a negligible KL term
in the loss, 1e-4, only so that the reference is computed)."""

from __future__ import annotations

from pathlib import Path

from prefalign.config.schema import RewardTrainConfig, RLTrainConfig
from prefalign.rewards.train import train_reward_model
from prefalign.rl.recipe import train_rl
from prefalign.toy.preference_data import write_toy_pairs
from prefalign.training.metrics import read_metrics


def train_proxy(root: Path, n_pairs: int, seed: int) -> tuple[Path, dict]:
    train = write_toy_pairs(root / "train", seed=seed, n_prompts=n_pairs)
    held = write_toy_pairs(root / "held", seed=seed + 1000, n_prompts=200)
    cfg = RewardTrainConfig.model_validate({
        "model": {"name_or_path": "toy"}, "data": {"train": str(train), "eval": str(held), "max_length": 96},
        "trainer": {"output_dir": str(root / "rm"), "max_steps": 100, "batch_size": 16, "lr": 3e-4,
                    "schedule": "constant", "progress": False, "seed": seed}})
    run = train_reward_model(cfg, overwrite=True)
    return run.model_dir, run.eval


def run_against_proxy(root: Path, proxy: Path, steps: int, seed: int) -> list[dict]:
    cfg = RLTrainConfig.model_validate({
        "model": {"name_or_path": "toy"}, "loss": [{"name": "ppo_clip"}],
        "rl": {"prompts": "toy", "group_size": 8, "max_new_tokens": 32, "advantage": "grpo",
               "rewards": [{"name": f"rm:{proxy}"}, {"name": "gold", "weight": 0.0}],
               "kl": {"coef": 1e-4, "estimator": "k3", "placement": "loss"}},
        "trainer": {"output_dir": str(root / "rl"), "max_steps": steps, "batch_size": 16, "lr": 3e-4,
                    "schedule": "constant", "progress": False, "seed": seed}})
    train_rl(cfg, overwrite=True)
    return [{"step": m["step"], "kl": m["rl/kl_policy"], "proxy": m[f"rl/reward/rm:{proxy}"],
             "gold": m["rl/reward/gold"]} for m in read_metrics(root / "rl")]


def smooth(rows: list[dict], window: int) -> list[dict]:
    """Means over consecutive windows of steps (each rollout is one noisy batch of samples)."""
    out = []
    for i in range(0, len(rows) - window + 1, window):
        part = rows[i:i + window]
        out.append({k: sum(r[k] for r in part) / len(part) for k in ("step", "kl", "proxy", "gold")})
    return out


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    kl = [r["kl"] for r in rows]
    for key, label, marker in [("proxy", "proxy (reward model)", "o"), ("gold", "gold reward", "s")]:
        ax.plot(kl, [r[key] - rows[0][key] for r in rows], marker=marker, label=label)
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("KL(policy || base), nats per response (k3 estimate on samples)")
    ax.set_ylabel("mean reward of the samples, minus its first value")
    ax.set_title("GRPO against a reward model trained on few pairs")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
