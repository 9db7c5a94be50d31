"""RL methods on the toy arithmetic prompts with the exact-answer verifier as the only reward.

    python -m prefalign.evaluation.rl_table --doc docs/rl.md --json docs/rl.json [--steps 150] [--seed 0]

Each method is its example config in examples/rl/ as it is, except the steps, the seed and the output folder.
After training, every policy answers the held-out arithmetic prompts (and 200 training ones) greedily; the
accuracy is the verifier's (the first number stated is the answer). KL(policy || base) is estimated from the
policy's own samples on the held-out prompts (temperature 1). Seconds are the whole run's, and the rollout
time is split into generation, scoring and training as the metrics log them. Then the reward
over-optimisation run of prefalign/evaluation/overoptimisation.py, with its figure next to --doc."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_text_atomic
from prefalign.config.loading import load_config
from prefalign.config.schema import RLTrainConfig
from prefalign.decoding.sampling import generate
from prefalign.decoding.self_consistency import first_number
from prefalign.evaluation.overoptimisation import plot, run_against_proxy, smooth, train_proxy
from prefalign.evaluation.policy_eval import compare_policies
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.rl.recipe import train_rl
from prefalign.toy.world import parse_prompt, split_prompts
from prefalign.training.metrics import read_metrics

METHODS = ["grpo", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "reinforce_pp", "ppo"]
WITH_DEMONSTRATIONS = ["srft", "grao"]  # examples that set rl.demonstrations: toy
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "rl"


def arithmetic_prompts() -> tuple[list[str], list[str]]:
    """(held-out, training) toy arithmetic prompts."""
    train, test = split_prompts()
    keep = [p for p in test if parse_prompt(p).kind == "arithmetic"]
    return keep, [p for p in train if parse_prompt(p).kind == "arithmetic"]


def verifier(prompt: str, response: str) -> float:
    return float(first_number(response) == str(parse_prompt(prompt).answer))


def greedy_accuracy(model: torch.nn.Module, tokenizer: object, prompts: list[str], max_new_tokens: int = 24) -> float:
    samples = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=False)
    return sum(verifier(p, s.text) for p, s in zip(prompts, samples)) / len(prompts)


def run_method(name: str, out: Path, steps: int, seed: int) -> tuple[Path, list[dict], float]:
    cfg = load_config(EXAMPLES / f"{name}.yaml", [f"trainer.max_steps={steps}", f"trainer.seed={seed}",
                                                  f"trainer.output_dir={out}", "trainer.progress=false",
                                                  "trainer.save_every=0"], schema=RLTrainConfig)
    t0 = time.perf_counter()
    run = train_rl(cfg, overwrite=True)
    return run.outputs["model"], read_metrics(run.run_dir), time.perf_counter() - t0


def measure(runs: list[tuple[str, int]], seed: int, with_base: bool = True) -> list[dict]:
    """One row per (method, steps), after the base's row."""
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    held_out, train = arithmetic_prompts()
    train = train[:200]
    rows = []
    if with_base:
        rows.append({"method": "base", "steps": 0, "held_out_accuracy": greedy_accuracy(base, tokenizer, held_out),
                     "train_accuracy": greedy_accuracy(base, tokenizer, train), "kl": 0.0, "seconds": 0.0})
        print(json.dumps(rows[-1]), flush=True)
    for name, steps in runs:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir, metrics, seconds = run_method(name, Path(tmp) / "run", steps, seed)
            policy = load_pretrained_model(AutoModelForCausalLM, str(model_dir))
        c = compare_policies(policy, base, tokenizer, held_out, verifier, seed=seed)
        tail = metrics[-10:]
        rows.append({"method": name, "steps": steps, "held_out_accuracy": greedy_accuracy(policy, tokenizer, held_out),
                     "train_accuracy": greedy_accuracy(policy, tokenizer, train), "kl": c.kl, "seconds": seconds,
                     "first_reward": sum(m["rl/reward_mean"] for m in metrics[:10]) / len(metrics[:10]),
                     "last_reward": sum(m["rl/reward_mean"] for m in tail) / len(tail),
                     "length": sum(m["rl/response_length"] for m in tail) / len(tail),
                     **{k: sum(m.get(f"time/{k}", 0.0) for m in metrics) for k in ("generate", "score", "train")}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict], seed: int, n_held_out: int) -> str:
    lines = ["# Reinforcement learning on the toy arithmetic task", "",
             "<!-- generated by `python -m prefalign.evaluation.rl_table`; edit the script, not this table -->", "",
             f"Each method's example config (examples/rl/), seed {seed}, the exact-answer verifier as the only reward; "
             f"greedy accuracy on the {n_held_out} held-out arithmetic prompts and on 200 training ones; KL(policy "
             "|| base) from the policy's samples on the held-out prompts; the mean reward of the samples over the "
             "first and last 10 rollouts (temperature 1; all reward terms, so DAPO's includes its overlong "
             "penalty); seconds on this machine (2 CPU cores).", "",
             "| method | steps | held-out accuracy | train accuracy | reward first -> last 10 | length | KL | "
             "seconds (generate / score / train) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["method"] == "base":
            lines.append(f"| base | 0 | {r['held_out_accuracy']:.3f} | {r['train_accuracy']:.3f} | | | | |")
            continue
        lines.append(f"| {r['method']} | {r['steps']} | {r['held_out_accuracy']:.3f} | {r['train_accuracy']:.3f} | "
                     f"{r['first_reward']:.3f} -> {r['last_reward']:.3f} | {r['length']:.1f} | {r['kl']:.2f} | "
                     f"{r['seconds']:.0f} ({r['generate']:.0f} / {r['score']:.0f} / {r['train']:.0f}) |")
    shown = [m for m in WITH_DEMONSTRATIONS if any(r["method"] == m for r in rows)]
    if shown:
        lines += ["", f"{' and '.join(shown)} also learn from demonstrations: the toy world's ideal answer to each "
                  "training prompt joins its group (rl.demonstrations: toy), so they see the right answers the "
                  "others must find; their reward column is that of their own samples only. Seconds are not "
                  "comparable across rows measured on different days or beside other work."]
    return "\n".join(lines) + "\n"


def measure_overoptimisation(n_pairs: int, steps: int, seed: int, figure: Path | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proxy, rm_eval = train_proxy(Path(tmp), n_pairs, seed)
        curve = smooth(run_against_proxy(Path(tmp), proxy, steps, seed), window=10)
    if figure is not None:
        plot(curve, figure)
    return {"pairs": n_pairs, "steps": steps, "rm_eval": rm_eval, "curve": curve,
            "figure": None if figure is None else figure.name}


def overoptimisation_markdown(o: dict) -> str:
    acc = o["rm_eval"].get("held_out_accuracy", float("nan"))
    lines = ["", "## Reward over-optimisation", "",
             f"GRPO on all toy prompts against a reward model trained on {o['pairs']} gold-labelled pairs (held-out "
             f"pair accuracy {acc:.3f}); the gold reward is logged, not learned from. Means over windows of 10 "
             f"steps of the policy's own samples (prefalign/evaluation/overoptimisation.py).", ""]
    if o.get("figure"):
        lines += [f"![proxy and gold reward against KL]({o['figure']})", ""]
    lines += ["| steps | KL | proxy reward | gold reward |", "|---|---|---|---|"]
    lines += [f"| {r['step']:.0f} | {r['kl']:.2f} | {r['proxy']:.3f} | {r['gold']:.3f} |" for r in o["curve"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--reuse-methods", type=Path, help="take the methods' rows from an earlier --json")
    parser.add_argument("--reuse-overoptimisation", action="store_true",
                        help="with --reuse-methods: take the over-optimisation run from that file too")
    parser.add_argument("--add", nargs="*", default=[], metavar="METHOD:STEPS", help="more rows, e.g. dapo:600")
    parser.add_argument("--overopt-pairs", type=int, default=100)
    parser.add_argument("--overopt-steps", type=int, default=200)
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path, help="only rewrite --doc from an earlier --json")
    args = parser.parse_args()
    if args.from_json:
        done = json.loads(args.from_json.read_text())
        write_text_atomic(args.doc, markdown(done["methods"], args.seed, len(arithmetic_prompts()[0]))
                          + overoptimisation_markdown(done["overoptimisation"]))
        return
    earlier = json.loads(args.reuse_methods.read_text()) if args.reuse_methods else None
    if earlier is not None:
        rows = earlier["methods"] if isinstance(earlier, dict) else earlier
    else:
        rows = measure([(m, args.steps) for m in args.methods], args.seed)
    extra = [(spec.split(":")[0], int(spec.split(":")[1])) for spec in args.add]
    rows += measure(extra, args.seed, with_base=False) if extra else []
    if args.reuse_overoptimisation and isinstance(earlier, dict):
        overopt = earlier["overoptimisation"]
    else:
        figure = args.doc.parent / "rl_overoptimisation.png" if args.doc else None
        overopt = measure_overoptimisation(args.overopt_pairs, args.overopt_steps, args.seed, figure)
    if args.json:
        write_text_atomic(args.json, json.dumps({"methods": rows, "overoptimisation": overopt}, indent=2))
    if args.doc:
        write_text_atomic(args.doc, markdown(rows, args.seed, len(arithmetic_prompts()[0]))
                          + overoptimisation_markdown(overopt))


if __name__ == "__main__":
    main()
