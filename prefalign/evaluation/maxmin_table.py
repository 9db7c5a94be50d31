"""MaxMin-RLHF on the toy task: does EM find the groups of users, and does serving the worst-off group help the
minority that one pooled reward model leaves out?

    python -m prefalign.evaluation.maxmin_table --doc docs/maxmin.md --json docs/maxmin.json

Twelve annotators label toy pairs: eight prefer the higher gold reward, four have a minority taste (the shorter
answer, which mostly agrees with the gold reward, or the longer one, which mostly does not); which annotator has
which taste is hidden from the fit. `fit_groups` runs EM over the annotators into two groups from a random and
from the pooled start. Then online DPO from the toy base twice, the same settings and seed: scored by one reward
model on all pairs (`rm:`), and by the worst-off group (`maxmin:`). Each policy against the base on held-out
prompts, as each group judges it."""

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
from prefalign.toy.gold_reward import gold_reward
from prefalign.toy.preference_data import write_jsonl
from prefalign.toy.reward_data import USERS, toy_reward_rows
from prefalign.toy.world import split_prompts

MINORITIES = ("brief", "verbose")


def tastes(minority: str) -> dict[str, str]:
    """Eight annotators who prefer the higher gold reward, four with the minority's taste."""
    return {f"u{i:02d}": "quality" if i < 8 else minority for i in range(12)}


def rm_config(train: Path, out: Path, seed: int) -> RewardTrainConfig:
    return RewardTrainConfig(model=ModelConfig(name_or_path="toy"), data=DataConfig(train=str(train), max_length=96,
                                                                                   eval_fraction=0.0),
                             reward=RewardConfig(), trainer=TrainerConfig(output_dir=str(out), max_steps=150,
                                                                          batch_size=16, lr=3e-4, schedule="constant",
                                                                          progress=False, seed=seed))


def purity(assignment: dict[str, int], taste_of: dict[str, str]) -> float:
    """The share of annotators whose group's most common taste is their own."""
    groups: dict[int, list[str]] = {}
    for user, k in assignment.items():
        groups.setdefault(k, []).append(taste_of[user])
    return sum(max(members.count(t) for t in set(members)) for members in groups.values()) / len(assignment)


def online_policy(scorer: str, out: Path, steps: int, seed: int) -> Path:
    cfg = load_config(EXAMPLES_DIR / "online_dpo.yaml", [f"online.scorer={scorer}", f"trainer.output_dir={out}",
                                                        f"trainer.max_steps={steps}", f"trainer.seed={seed}",
                                                        "trainer.progress=false", "trainer.save_every=0"],
                      schema=OnlineTrainConfig)
    return Path(train_online(cfg, console=Console(quiet=True), overwrite=True).outputs["model"])


def judge(policy_dir: Path, prompts: list[str], minority: str, seed: int) -> dict:
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    policy = load_pretrained_model(AutoModelForCausalLM, str(policy_dir))
    quality = compare_policies(policy, base, tokenizer, prompts, gold_reward, seed=seed)
    other = compare_policies(policy, base, tokenizer, prompts, USERS[minority], seed=seed)
    return {"quality_win_rate": quality.win_rate, "minority_win_rate": other.win_rate,
            "worst_win_rate": min(quality.win_rate, other.win_rate), "gold": quality.policy_reward,
            "length": quality.policy_length, "kl": quality.kl}


def taste_agreement(rows: list[dict]) -> float:
    """The share of pairs whose order the other taste would keep."""
    majority, minority = "quality", next(r["taste"] for r in rows if r["taste"] != "quality")
    other = {majority: USERS[minority], minority: USERS[majority]}
    return sum(other[r["taste"]](r["prompt"], r["chosen"]) > other[r["taste"]](r["prompt"], r["rejected"])
               for r in rows) / len(rows)


def fit_both_starts(train: Path, root: Path, taste_of: dict[str, str], seed: int) -> dict:
    """EM from each start on the same pairs; the pooled start's groups are kept in root/groups."""
    fits = {}
    for start in ("random", "pooled"):
        started = time.perf_counter()
        out = root / ("groups" if start == "pooled" else "groups-random")
        fit = fit_groups(rm_config(train, root / "unused", seed), groups=2, rounds=5, out=out, seed=seed, start=start)
        fits[start] = {"assignment": fit.assignment, "purity": purity(fit.assignment, taste_of), "rounds": fit.rounds,
                       "seconds": time.perf_counter() - started}
        print(seed, start, json.dumps(fits[start]["rounds"]), fits[start]["purity"])
    return fits


def measure_minority(minority: str, steps: int, seeds: list[int], prompts: list[str], tmp: Path) -> dict:
    """EM from both starts for every seed; the online comparison on the first seed's pooled-start groups."""
    taste_of, em, agreement, policies = tastes(minority), {}, {}, {}
    for seed in seeds:
        root = tmp / f"{minority}{seed}"
        rows = toy_reward_rows(1200, seed=seed, tastes=taste_of)
        agreement[str(seed)] = taste_agreement(rows)
        em[str(seed)] = fit_both_starts(write_jsonl(root / "pairs.jsonl", rows), root, taste_of, seed)
    root, seed = tmp / f"{minority}{seeds[0]}", seeds[0]
    pooled = train_reward_model(rm_config(root / "pairs.jsonl", root / "pooled", seed),
                                console=Console(quiet=True)).model_dir
    for name, scorer in [("one reward model (rm:)", f"rm:{pooled}"), ("MaxMin (maxmin:)", f"maxmin:{root / 'groups'}")]:
        started = time.perf_counter()
        policy = online_policy(scorer, root / name.split()[0], steps, seed)
        policies[name] = {**judge(policy, prompts, minority, seed + 1), "seconds": time.perf_counter() - started}
        print(minority, name, json.dumps(policies[name]))
    return {"tastes": taste_of, "agreement": agreement, "em": em,
            "base": judge(TOY_BASE, prompts, minority, seed + 1), "policies": policies}


def measure(steps: int, seeds: list[int], n_prompts: int, minorities: list[str]) -> dict:
    prompts = random.Random(seeds[0]).sample(split_prompts()[1], n_prompts)
    with tempfile.TemporaryDirectory() as tmp:
        by_minority = {m: measure_minority(m, steps, seeds, prompts, Path(tmp)) for m in minorities}
    return {"seeds": seeds, "steps": steps, "prompts": n_prompts, "minorities": by_minority}


def em_lines(r: dict, seeds: list[int]) -> list[str]:
    lines = ["| seed | start | EM rounds | annotators moved, per round | held-out log-likelihood, per round | purity "
             "| seconds |", "|---|---|---|---|---|---|---|"]
    for seed, fits in r["em"].items():
        for start, fit in fits.items():
            moved = ", ".join(str(row["changed"]) for row in fit["rounds"])
            loglik = ", ".join(f"{row['log_likelihood']:.0f}" for row in fit["rounds"])
            lines.append(f"| {seed} | {start} | {len(fit['rounds'])} | {moved} | {loglik} | {fit['purity']:.3f} "
                         f"| {fit['seconds']:.0f} |")
    groups: dict[int, list[str]] = {}
    for user, k in sorted(r["em"][str(seeds[0])]["pooled"]["assignment"].items()):
        groups.setdefault(k, []).append(f"{user} ({r['tastes'][user]})")
    lines += ["", f"The pooled start's groups for seed {seeds[0]}, served to the online runs below:", ""]
    return lines + [f"- group {k}: {', '.join(members)}" for k, members in sorted(groups.items())]


def policy_lines(r: dict, minority: str) -> list[str]:
    lines = [f"| policy | quality annotators' win rate | {minority} annotators' win rate | worst group | gold reward "
             "| length | KL | seconds |", "|---|---|---|---|---|---|---|---|"]
    for name, p in [("base", r["base"]), *r["policies"].items()]:
        seconds = f"{p['seconds']:.0f}" if "seconds" in p else ""
        lines.append(f"| {name} | {p['quality_win_rate']:.3f} | {p['minority_win_rate']:.3f} "
                     f"| {p['worst_win_rate']:.3f} | {p['gold']:.3f} | {p['length']:.1f} | {p['kl']:.2f} | {seconds} |")
    return lines


def markdown(r: dict) -> str:
    lines = ["# MaxMin-RLHF on the toy task", "",
             "<!-- generated by `python -m prefalign.evaluation.maxmin_table`; edit the script, not this -->", "",
             "Twelve annotators label 1,200 toy pairs: eight (u00-u07) prefer the higher gold reward, four (u08-u11) "
             "have the minority's taste (brief: the shorter answer; verbose: the longer one); the fit sees only "
             "annotator ids. `prefalign rm groups --groups 2`: EM over the annotators, at most 5 rounds; each round "
             "trains a Bradley-Terry reward model per group on the toy base (150 steps of 16 pairs) on half of its "
             "annotators' pairs and reassigns every annotator by the other half. The random start deals the "
             "annotators to the groups at random; the pooled start (the default) ranks them by how well one reward "
             "model on everyone's pairs explains them and cuts the ranking in two. Purity: the share of annotators "
             "whose group's usual taste is their own (0.5 or more by construction).", "",
             f"Then online DPO from the toy base, {r['steps']} steps (examples/online_dpo.yaml, seed "
             f"{r['seeds'][0]}), scored by one reward model on all pairs (the same settings) or by the worst-off "
             f"group (`maxmin:`); {r['prompts']} held-out prompts, each policy against the base as each group "
             "judges it: the gold reward for the quality annotators, the length for the others.", ""]
    for minority, m in r["minorities"].items():
        agreement = m["agreement"].values()
        lines += [f"## Minority: {minority}", "", f"The minority's taste keeps the majority's order on "
                  f"{min(agreement):.0%}-{max(agreement):.0%} of the pairs (by seed).", ""]
        lines += em_lines(m, r["seeds"]) + [""] + policy_lines(m, minority) + [""]
    lines += ["A win rate counts ties as half, so the base scores about 0.5 against itself. The online comparison "
              "is one seed."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--minorities", nargs="+", choices=MINORITIES, default=list(MINORITIES))
    parser.add_argument("--prompts", type=int, default=150)
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path, help="only rewrite --doc from a saved --json")
    args = parser.parse_args()
    result = json.loads(args.from_json.read_text()) if args.from_json else measure(args.steps, args.seeds, args.prompts, args.minorities)
    write_result(result, args.json, args.doc, markdown)


if __name__ == "__main__":
    main()
