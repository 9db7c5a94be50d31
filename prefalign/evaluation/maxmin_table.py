"""MaxMin-RLHF on the toy task: does EM find the groups of users, and does serving the worst-off group help the
minority that one pooled reward model leaves out?

    python -m prefalign.evaluation.maxmin_table --doc docs/maxmin.md --json docs/maxmin.json

Twelve annotators label toy pairs: eight prefer the higher gold reward, four the shorter answer; which annotator
has which taste is hidden from the fit. `fit_groups` runs EM over the annotators into two groups (a
Bradley-Terry reward model each, on the toy base). Then online DPO from the toy base twice, the same settings
and seed: scored by one reward model on all pairs (`rm:`), and by the worst-off group (`maxmin:`). Each policy
against the base on held-out prompts, as each group judges it: the gold reward's win rate for the quality
annotators, the shorter answer's for the brief ones."""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_result
from prefalign.config.examples import EXAMPLES_DIR
from prefalign.config.loading import load_config
from prefalign.config.schema import (
    DataConfig,
    ModelConfig,
    OnlineTrainConfig,
    RewardConfig,
    RewardTrainConfig,
    TrainerConfig,
)
from prefalign.evaluation.policy_eval import compare_policies
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.online.recipe import train_online
from prefalign.pluralistic.maxmin import fit_groups
from prefalign.rewards.train import train_reward_model
from prefalign.toy.gold_reward import brevity_reward, gold_reward
from prefalign.toy.preference_data import write_jsonl
from prefalign.toy.reward_data import toy_reward_rows
from prefalign.toy.world import split_prompts

TASTES = {f"u{i:02d}": "quality" if i < 8 else "brief" for i in range(12)}


def rm_config(train: Path, out: Path, seed: int) -> RewardTrainConfig:
    return RewardTrainConfig(model=ModelConfig(name_or_path="toy"), data=DataConfig(train=str(train), max_length=96,
                                                                                   eval_fraction=0.0),
                             reward=RewardConfig(), trainer=TrainerConfig(output_dir=str(out), max_steps=150,
                                                                          batch_size=16, lr=3e-4, schedule="constant",
                                                                          progress=False, seed=seed))


def purity(assignment: dict[str, int]) -> float:
    """The share of annotators whose group's most common taste is their own."""
    groups: dict[int, list[str]] = {}
    for user, k in assignment.items():
        groups.setdefault(k, []).append(TASTES[user])
    return sum(max(members.count(t) for t in set(members)) for members in groups.values()) / len(assignment)


def online_policy(scorer: str, out: Path, steps: int, seed: int) -> Path:
    cfg = load_config(EXAMPLES_DIR / "online_dpo.yaml", [f"online.scorer={scorer}", f"trainer.output_dir={out}",
                                                        f"trainer.max_steps={steps}", f"trainer.seed={seed}",
                                                        "trainer.progress=false", "trainer.save_every=0"],
                      schema=OnlineTrainConfig)
    return Path(train_online(cfg, console=Console(quiet=True), overwrite=True).outputs["model"])


def judge(policy_dir: Path, prompts: list[str], seed: int) -> dict:
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    policy = load_pretrained_model(AutoModelForCausalLM, str(policy_dir))
    quality = compare_policies(policy, base, tokenizer, prompts, gold_reward, seed=seed)
    brief = compare_policies(policy, base, tokenizer, prompts, brevity_reward, seed=seed)
    return {"quality_win_rate": quality.win_rate, "brief_win_rate": brief.win_rate,
            "worst_win_rate": min(quality.win_rate, brief.win_rate), "gold": quality.policy_reward,
            "length": quality.policy_length, "kl": quality.kl}


def measure(steps: int, seed: int, n_prompts: int) -> dict:
    prompts = random.Random(seed).sample(split_prompts()[1], n_prompts)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        train = write_jsonl(root / "pairs.jsonl", toy_reward_rows(1200, seed=seed, tastes=TASTES))
        started = time.perf_counter()
        fit = fit_groups(rm_config(train, root / "unused", seed), groups=2, rounds=5, out=root / "groups", seed=seed)
        em_seconds = time.perf_counter() - started
        pooled = train_reward_model(rm_config(train, root / "pooled", seed), console=Console(quiet=True)).model_dir
        policies = {}
        for name, scorer in [("one reward model (rm:)", f"rm:{pooled}"), ("MaxMin (maxmin:)", f"maxmin:{root / 'groups'}")]:
            started = time.perf_counter()
            policy = online_policy(scorer, root / name.split()[0], steps, seed)
            policies[name] = {**judge(policy, prompts, seed + 1), "seconds": time.perf_counter() - started}
            print(name, json.dumps(policies[name]))
        base = judge(TOY_BASE, prompts, seed + 1)
    return {"seed": seed, "steps": steps, "prompts": n_prompts, "em_seconds": em_seconds,
            "assignment": fit.assignment, "tastes": TASTES, "purity": purity(fit.assignment),
            "rounds": fit.rounds, "base": base, "policies": policies}


def markdown(r: dict) -> str:
    lines = ["# MaxMin-RLHF on the toy task", "",
             "<!-- generated by `python -m prefalign.evaluation.maxmin_table`; edit the script, not this -->", "",
             "Twelve annotators label 1,200 toy pairs: eight (u00-u07) prefer the higher gold reward, four (u08-u11) "
             "the shorter answer; the fit sees only annotator ids. `prefalign rm groups --groups 2`: EM over the "
             "annotators, a Bradley-Terry reward model per group on the toy base (150 steps of 16 pairs each).", "",
             "| EM round | log-likelihood | annotators moved | annotators per group |", "|---|---|---|---|"]
    for row in r["rounds"]:
        lines.append(f"| {row['round']} | {row['log_likelihood']:.1f} | {row['changed']} | {row['sizes']} |")
    groups: dict[int, list[str]] = {}
    for user, k in sorted(r["assignment"].items()):
        groups.setdefault(k, []).append(f"{user} ({r['tastes'][user]})")
    lines += ["", f"Purity (annotators whose group's usual taste is theirs): {r['purity']:.3f}; EM took "
              f"{r['em_seconds']:.0f} s.", ""]
    lines += [f"- group {k}: {', '.join(members)}" for k, members in sorted(groups.items())]
    lines += ["", f"Online DPO from the toy base, {r['steps']} steps (examples/online_dpo.yaml, seed {r['seed']}), "
              f"scored by one reward model on all pairs or by the worst-off group; {r['prompts']} held-out prompts, "
              "each policy against the base as each group judges it.", "",
              "| policy | quality annotators' win rate | brief annotators' win rate | worst group | gold reward | "
              "length | KL |", "|---|---|---|---|---|---|---|"]
    for name, p in [("base", r["base"]), *r["policies"].items()]:
        lines.append(f"| {name} | {p['quality_win_rate']:.3f} | {p['brief_win_rate']:.3f} | {p['worst_win_rate']:.3f} "
                     f"| {p['gold']:.3f} | {p['length']:.1f} | {p['kl']:.2f} |")
    lines += ["", "A win rate counts ties as half, so the base scores 0.5 against itself. One seed."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=150)
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path, help="only rewrite --doc from a saved --json")
    args = parser.parse_args()
    result = json.loads(args.from_json.read_text()) if args.from_json else measure(args.steps, args.seed, args.prompts)
    write_result(result, args.json, args.doc, markdown)


if __name__ == "__main__":
    main()
