"""Two ways of changing what PPO is anchored to and rewarded by, on the toy task (gold reward, all prompts).

SALSA (Chegini et al. 2024): the KL reference is the weight average ("soup") of two SFT models instead of
the one SFT model the policy starts from. The toy has no pretraining stage apart from the toy base, so the
two SFT models are the toy base fine-tuned (loss `sft`) on the chosen answers of two disjoint sets of toy
pairs, with different seeds. PPO then learns from the gold reward with a fixed KL penalty in the reward.

RTO (Zhong et al. 2024): PPO from the toy base whose reward is a DPO model's token-wise implicit reward
beta (log pi_dpo - log pi_base) on every token, against the same reward summed on the last token (DPO's
sentence-level reward) and against the gold reward itself. The DPO model is the quickstart's DPO.

Every policy answers the same held-out prompts once (temperature 1); gold reward, win rate and KL are
against the model named in each table. Writes --doc (and --json):

    python -m prefalign.evaluation.rl_reference_table --doc docs/rl_references.md --json docs/rl_references.json"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_text_atomic
from prefalign.config.loading import load_config
from prefalign.config.schema import LossTerm, RLTrainConfig
from prefalign.evaluation.policy_eval import compare_policies
from prefalign.merging.merge import MergeRecipe, merge_folders
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.quickstart import quickstart_config
from prefalign.rl.recipe import train_rl
from prefalign.toy.gold_reward import gold_reward
from prefalign.toy.preference_data import write_toy_pairs
from prefalign.toy.world import split_prompts
from prefalign.training.metrics import read_metrics
from prefalign.training.preference import train_preference

PPO = Path(__file__).resolve().parents[2] / "examples" / "rl" / "ppo.yaml"


def sft_model(root: Path, name: str, seed: int, n_prompts: int, steps: int) -> str:
    """The toy base fine-tuned on the chosen answers of its own toy pairs (prompts drawn with `seed`)."""
    pairs = write_toy_pairs(root / f"{name}-data", seed=seed, n_prompts=n_prompts)
    cfg = quickstart_config(root / name, seed, steps)
    cfg.data.train, cfg.loss = str(pairs), [LossTerm(name="sft")]
    cfg.trainer.progress, cfg.trainer.eval_every = False, 0
    return str(train_preference(cfg, console=Console(quiet=True), overwrite=True).outputs["model"])


def dpo_model(root: Path, seed: int, n_prompts: int, steps: int) -> str:
    pairs = write_toy_pairs(root / "dpo-data", seed=seed, n_prompts=n_prompts)
    cfg = quickstart_config(root / "dpo", seed, steps)
    cfg.data.train, cfg.trainer.progress, cfg.trainer.eval_every = str(pairs), False, 0
    return str(train_preference(cfg, console=Console(quiet=True), overwrite=True).outputs["model"])


def ppo(out: Path, start: str, steps: int, seed: int, kl_coef: float, rl: dict, reference: dict) -> dict:
    """examples/rl/ppo.yaml on all toy prompts with a fixed KL coefficient; `rl` and `reference` override."""
    cfg = load_config(PPO, [f"trainer.max_steps={steps}", f"trainer.seed={seed}", f"trainer.output_dir={out}",
                            "trainer.progress=false", "trainer.save_every=0", f"model.name_or_path={start}",
                            "rl.prompts=toy", "rl.max_new_tokens=32", "rl.kl.target=null",
                            f"rl.kl.coef={kl_coef}"], schema=RLTrainConfig)
    cfg = RLTrainConfig.model_validate(cfg.model_dump() | {"rl": cfg.rl.model_dump() | rl,
                                                           "reference": cfg.reference.model_dump() | reference})
    t0 = time.perf_counter()
    run = train_rl(cfg, overwrite=True)
    metrics = read_metrics(run.run_dir)
    tail = metrics[-10:]
    return {"model": str(run.outputs["model"]), "seconds": time.perf_counter() - t0,
            "train_reward_last10": sum(m["rl/reward_mean"] for m in tail) / len(tail),
            "train_kl_last10": sum(m["rl/kl_rollout"] for m in tail) / len(tail),
            "dense_last10": sum(m["rl/dense_reward"] for m in tail) / len(tail)}


def judged(model: str, against: str, tok: object, prompts: list[str], seed: int) -> dict:
    """Gold reward of `model`'s samples, and its win rate and KL against `against`."""
    policy = load_pretrained_model(AutoModelForCausalLM, model)
    other = load_pretrained_model(AutoModelForCausalLM, against)
    c = compare_policies(policy, other, tok, prompts, gold_reward, seed=seed + 1)
    return {"gold_reward": c.policy_reward, "against_reward": c.baseline_reward, "win_rate": c.win_rate,
            "kl": c.kl, "length": c.policy_length}


def salsa(root: Path, args: argparse.Namespace, tok: object, prompts: list[str], console: Console) -> list[dict]:
    a = sft_model(root, "sft-a", args.seed + 1, args.sft_prompts, args.sft_steps)
    b = sft_model(root, "sft-b", args.seed + 2, args.sft_prompts, args.sft_steps)
    soup = str(merge_folders([a, b], root / "soup", MergeRecipe("linear")))
    base = str(TOY_BASE)
    rows = [{"row": name, "start": None, "reference": None, **judged(path, base, tok, prompts, args.seed)}
            for name, path in [("SFT model A (no RL)", a), ("SFT model B (no RL)", b), ("soup of A and B (no RL)", soup)]]
    console.print(rows)
    runs = [("PPO: start A, reference A", a, {}),
            ("PPO: start A, reference soup", a, {"soup": [a, b]}),
            ("SALSA: start soup, reference soup", soup, {"soup": [a, b]})]
    for i, (name, start, reference) in enumerate(runs):
        console.rule(name)
        r = ppo(root / f"salsa-{i}", start, args.steps, args.seed, args.kl_coef,
                {"rewards": [{"name": "gold"}]}, reference)
        ref_model = soup if reference else start
        rows.append({"row": name, **r, **judged(r["model"], base, tok, prompts, args.seed),
                     "kl_to_reference": judged(r["model"], ref_model, tok, prompts, args.seed)["kl"]})
        console.print(rows[-1])
    return rows


def rto(root: Path, args: argparse.Namespace, tok: object, prompts: list[str], console: Console) -> list[dict]:
    dpo = dpo_model(root, args.seed, args.dpo_prompts, args.dpo_steps)
    base = str(TOY_BASE)
    rows = [{"row": "DPO model (no RL)", **judged(dpo, base, tok, prompts, args.seed)}]
    runs = [("PPO, gold reward", {"rewards": [{"name": "gold"}]}),
            ("PPO, DPO reward summed on the last token", {"rewards": [], "dpo_reward": {
                "model": dpo, "beta": 0.1, "placement": "sequence"}}),
            ("RTO: PPO, DPO token rewards", {"rewards": [], "dpo_reward": {"model": dpo, "beta": 0.1}})]
    for i, (name, rl) in enumerate(runs):
        console.rule(name)
        r = ppo(root / f"rto-{i}", "toy", args.steps, args.seed, args.kl_coef, rl, {})
        rows.append({"row": name, **r, **judged(r["model"], base, tok, prompts, args.seed)})
        console.print(rows[-1])
    return rows


def render(result: dict) -> str:
    s = result["settings"]
    lines = ["# Soup references (SALSA) and dense DPO rewards (RTO) on the toy task", "",
             "Generated by `python -m prefalign.evaluation.rl_reference_table` "
             "(prefalign/evaluation/rl_reference_table.py); do not edit by hand.",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}. "
             f"Date: {time.strftime('%Y-%m-%d')}. Seed {s['seed']}, one run per row.", "",
             f"PPO is examples/rl/ppo.yaml (GAE, a value head, 2 epochs x 2 mini-batches a rollout, 16 prompts x 4 "
             f"samples) on all toy training prompts, 32 new tokens, {s['steps']} steps, with a fixed KL penalty "
             f"{s['kl_coef']} (k1) in the reward. Evaluation: {s['eval_prompts']} held-out prompts, one sample each "
             "at temperature 1, scored by the gold reward.", "",
             "## SALSA: the KL reference is a soup of two SFT models", "",
             f"SFT models A and B: the toy base fine-tuned with `sft` for {s['sft_steps']} steps on the chosen "
             f"answers of toy pairs on {s['sft_prompts']} prompts drawn with different seeds. The soup is their "
             "uniform weight average (`reference.soup`). KL to the base is the toy base's; KL to the reference is "
             "to the run's own KL anchor.", "",
             "| row | gold reward | win rate vs base | KL to base | KL to its reference | length | reward, last 10 "
             "rollouts |", "|---|---|---|---|---|---|---|"]
    for r in result["salsa"]:
        ref_kl = f"{r['kl_to_reference']:.2f}" if "kl_to_reference" in r else ""
        train = f"{r['train_reward_last10']:.3f}" if "train_reward_last10" in r else ""
        lines.append(f"| {r['row']} | {r['gold_reward']:.3f} | {r['win_rate']:.3f} | {r['kl']:.2f} | {ref_kl} | "
                     f"{r['length']:.1f} | {train} |")
    lines += ["", "## RTO: DPO's token-wise reward for PPO", "",
              f"The DPO model: the quickstart's DPO (beta 0.1) for {s['dpo_steps']} steps on toy pairs on "
              f"{s['dpo_prompts']} prompts. PPO starts from the toy base, with KL to the base in the reward; the "
              "DPO rows learn from 0.1 (log pi_dpo - log pi_base) per token (RTO) or its sum on the last token, "
              "never from the gold reward.", "",
              "| row | gold reward | win rate vs base | KL to base | length | DPO reward of the samples, last 10 "
              "rollouts |", "|---|---|---|---|---|---|"]
    for r in result["rto"]:
        dense = f"{r['dense_last10']:.3f}" if r.get("dense_last10") else ""
        lines.append(f"| {r['row']} | {r['gold_reward']:.3f} | {r['win_rate']:.3f} | {r['kl']:.2f} | "
                     f"{r['length']:.1f} | {dense} |")
    return "\n".join(lines) + "\n" + notes(result)


def notes(result: dict) -> str:
    """What the tables say, from their own figures."""
    sa = {r["row"]: r for r in result["salsa"]}
    ppo_a, soup_ref, salsa_row = (sa["PPO: start A, reference A"], sa["PPO: start A, reference soup"],
                                  sa["SALSA: start soup, reference soup"])
    rt = {r["row"]: r for r in result["rto"]}
    dense, seq, gold = (rt["RTO: PPO, DPO token rewards"], rt["PPO, DPO reward summed on the last token"],
                        rt["PPO, gold reward"])
    lines = ["", "## Reading it", "",
             f"- SALSA's claim is a higher reward than PPO anchored to its own SFT model. Here: "
             f"{salsa_row['gold_reward']:.3f} (start and reference soup) and {soup_ref['gold_reward']:.3f} (start A, "
             f"reference soup) against {ppo_a['gold_reward']:.3f} (start A, reference A); "
             f"{'higher' if salsa_row['gold_reward'] > ppo_a['gold_reward'] else 'not higher'} for SALSA.",
             f"- RTO's claim is that the dense reward trains better than DPO's reward given once per response. "
             f"Here: {dense['gold_reward']:.3f} against {seq['gold_reward']:.3f} gold reward "
             f"({'higher' if dense['gold_reward'] > seq['gold_reward'] else 'not higher'}); the gold-reward PPO "
             f"reaches {gold['gold_reward']:.3f} and the DPO model itself {rt['DPO model (no RL)']['gold_reward']:.3f}.",
             "- One seed and one sample per held-out prompt: differences of a few hundredths are within sampling "
             "noise."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rl_reference_table"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--sft-steps", type=int, default=100)
    parser.add_argument("--sft-prompts", type=int, default=800)
    parser.add_argument("--dpo-steps", type=int, default=100)
    parser.add_argument("--dpo-prompts", type=int, default=1000)
    parser.add_argument("--eval-prompts", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["salsa", "rto"], help="run one half (for a quick look; --doc needs both)")
    parser.add_argument("--doc", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    console = Console()
    tok = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    prompts = random.Random(args.seed).sample(split_prompts()[1], args.eval_prompts)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "doc", "json", "only")}}
    if args.only != "rto":
        result["salsa"] = salsa(args.out, args, tok, prompts, console)
    if args.only != "salsa":
        result["rto"] = rto(args.out, args, tok, prompts, console)
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2))
    if args.doc:
        write_text_atomic(args.doc, render(result))


if __name__ == "__main__":
    main()
