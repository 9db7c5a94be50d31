"""Online against offline DPO on the toy task at the same label budget and number of steps.

    python -m prefalign.evaluation.online_table --doc docs/online.md --json docs/online.json [--seeds 0 1]

Per seed, all three train DPO (beta 0.1, lr 2e-4, constant schedule, 16 pairs a step, `--steps` steps) from
the toy base:
  offline      pairs sampled once from the base: steps x 16 prompts x 4 samples, labelled by the gold
               reward, best vs worst (the quickstart's recipe at this budget)
  online       each step 4 samples of the next prompts from the current policy, gold-labelled, best vs worst
  online-noisy the same with the gold reward plus N(0, 0.5^2) noise as the labeller
  online-noisy-dual-margin  the same, each round sampling twice the pairs and keeping the half with the
               highest dual margin (online.select: dual_margin, select_keep 0.5; twice the labels)
Scorer calls (labels) are counted as made: online draws more prompts when a prompt's samples tie. Each
policy is then sampled once on `--eval-prompts` held-out prompts and compared with the base by the gold
reward (win rate with a bootstrap 95% CI, ties half), with KL(policy || base) estimated from its samples."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import OnlineTrainConfig, TrainConfig
from prefalign.evaluation.policy_eval import compare_policies
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.online.recipe import train_online
from prefalign.toy.gold_reward import gold_reward
from prefalign.toy.preference_data import write_toy_pairs
from prefalign.toy.world import split_prompts
from prefalign.training.metrics import read_metrics
from prefalign.training.preference import train_preference

TRAINER = dict(batch_size=16, lr=2e-4, schedule="constant", progress=False)


def run_offline(root: Path, seed: int, steps: int) -> tuple[Path, int]:
    n_prompts = steps * TRAINER["batch_size"]
    data = write_toy_pairs(root / "data", seed=seed, n_prompts=n_prompts)
    cfg = TrainConfig.model_validate({"model": {"name_or_path": "toy"}, "loss": [{"name": "dpo", "beta": 0.1}],
                                      "data": {"train": str(data), "eval_fraction": 0.0, "max_length": 256},
                                      "trainer": TRAINER | {"output_dir": str(root / "run"), "max_steps": steps,
                                                            "seed": seed}})
    return train_preference(cfg, overwrite=True).outputs["model"], n_prompts * 4


def run_online(root: Path, seed: int, steps: int, scorer: str, select: str = "none") -> tuple[Path, int]:
    cfg = OnlineTrainConfig.model_validate({"model": {"name_or_path": "toy"}, "loss": [{"name": "dpo", "beta": 0.1}],
                                            "online": {"samples": 4, "scorer": scorer, "noise": 0.5,
                                                       "select": select},
                                            "trainer": TRAINER | {"output_dir": str(root / "run"), "max_steps": steps,
                                                                  "seed": seed}})
    run = train_online(cfg, overwrite=True)
    return run.outputs["model"], int(read_metrics(run.run_dir)[-1]["online/labels"])


METHODS = {"offline": run_offline,
           "online": lambda root, seed, steps: run_online(root, seed, steps, "gold"),
           "online-noisy": lambda root, seed, steps: run_online(root, seed, steps, "noisy_gold"),
           "online-noisy-dual-margin": lambda root, seed, steps: run_online(root, seed, steps, "noisy_gold",
                                                                            "dual_margin")}


def measure(seeds: list[int], steps: int, n_eval: int, methods: list[str]) -> list[dict]:
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    prompts = split_prompts()[1][:n_eval]
    rows = []
    for seed in seeds:
        for name, run in ((m, METHODS[m]) for m in methods):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                model_dir, labels = run(Path(tmp), seed, steps)
                seconds = time.perf_counter() - t0
                policy = load_pretrained_model(AutoModelForCausalLM, str(model_dir))
            c = compare_policies(policy, base, tokenizer, prompts, gold_reward, seed=seed)
            rows.append({"method": name, "seed": seed, "steps": steps, "labels": labels, "seconds": seconds,
                         "gold_reward": c.policy_reward, "base_gold_reward": c.baseline_reward, "win_rate": c.win_rate,
                         "win_rate_ci": list(c.win_rate_ci), "kl": c.kl})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict], n_eval: int) -> str:
    lines = ["# Online preference optimisation", "",
             "<!-- generated by `python -m prefalign.evaluation.online_table`; edit the script, not this table -->", "",
             f"Toy task, DPO from the toy base, the same steps and 16 pairs a step for every method; {n_eval} "
             "held-out prompts, one sample each, judged against the base by the gold reward.", "",
             "| method | seed | steps | labels | gold reward (base) | win rate vs base (95% CI) | KL | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["win_rate_ci"]
        lines.append(f"| {r['method']} | {r['seed']} | {r['steps']} | {r['labels']} | {r['gold_reward']:.3f} "
                     f"({r['base_gold_reward']:.3f}) | {r['win_rate']:.3f} ({lo:.3f}-{hi:.3f}) | {r['kl']:.2f} | "
                     f"{r['seconds']:.0f} |")
    lines += ["", "Mean over seeds, and the paired difference from offline DPO (seed by seed, then its mean and "
              "range):", "", "| method | labels | gold reward | win rate | KL | gold reward - offline (min, max) |",
              "|---|---|---|---|---|---|"]
    offline = {r["seed"]: r["gold_reward"] for r in rows if r["method"] == "offline"}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        diffs = [r["gold_reward"] - offline[r["seed"]] for r in mine if r["seed"] in offline]
        mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("labels", "gold_reward", "win_rate", "kl")}
        diff = f"{sum(diffs) / len(diffs):+.3f} ({min(diffs):+.3f}, {max(diffs):+.3f})" if diffs else "n/a"
        lines.append(f"| {method} | {mean['labels']:.0f} | {mean['gold_reward']:.3f} | {mean['win_rate']:.3f} | "
                     f"{mean['kl']:.2f} | {diff} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path, help="rewrite --doc from the rows of an earlier run's --json")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args()
    if args.from_json:
        rows = json.loads(args.from_json.read_text())
        write_text_atomic(args.doc, markdown(rows, args.eval_prompts))
        return
    rows = measure(args.seeds, args.steps, args.eval_prompts, args.methods)
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2))
    if args.doc:
        write_text_atomic(args.doc, markdown(rows, args.eval_prompts))


if __name__ == "__main__":
    main()
