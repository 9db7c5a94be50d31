"""Step-DPO against outcome DPO at the same number of pairs, from the same samples of the toy base: the
evidence in docs/step_dpo.md.

    python -m prefalign.evaluation.step_dpo_table --doc docs/step_dpo.md --json docs/step_dpo.json

Per seed: 4 samples of the base on each of 1,200 training prompts. Outcome pairs are each prompt's best
against its worst sample by the gold reward (the quickstart's pairs); step pairs come from the same samples
(prefalign/toy/step_pairs.py: the first step that lowers the gold reward against the best of 4 sampled
replacements). Both are cut to the same number of pairs at random, and DPO trains on each with the same
budget (beta 0.1, batch 16). The policies are compared on 300 held-out prompts (gold reward, win rate
against the base, KL to it, words) and on the 41 held-out arithmetic prompts (greedy; right when the first
number stated is the answer)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.decoding.sampling import generate, sample
from prefalign.decoding.self_consistency import first_number
from prefalign.evaluation.selection_table import dpo, evaluate_policy
from prefalign.evaluation.table_script import seeded_table_main
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.toy.gold_reward import gold_reward
from prefalign.toy.preference_data import write_jsonl
from prefalign.toy.step_pairs import step_pairs_from_samples
from prefalign.toy.world import parse_prompt, split_prompts

N_PROMPTS, N_EVAL = 1200, 300


def outcome_pairs(drawn: list) -> list[dict]:
    """Each prompt's best sample against its worst by the gold reward (ties and empty samples dropped)."""
    rows = []
    for group in drawn:
        scored = sorted(((gold_reward(s.prompt, s.text), s.text) for s in group if s.text.strip()), key=lambda x: -x[0])
        if len(scored) >= 2 and scored[0][0] > scored[-1][0]:
            rows.append({"prompt": group[0].prompt, "chosen": " " + scored[0][1], "rejected": " " + scored[-1][1]})
    return rows


def arithmetic_accuracy(model_dir: str, tok: object) -> float:
    prompts = [p for p in split_prompts()[1] if parse_prompt(p).kind == "arithmetic"]
    policy = load_pretrained_model(AutoModelForCausalLM, model_dir)
    answers = [first_number(s.text) for s in generate(policy, tok, prompts, 24, do_sample=False)]
    return sum(a == str(parse_prompt(p).answer) for a, p in zip(answers, prompts)) / len(prompts)


def one_seed(root: Path, seed: int, steps: int, console: Console) -> list[dict]:
    tok = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    prompts = random.Random(seed).sample(split_prompts()[0], N_PROMPTS)
    drawn = sample(base, tok, prompts, n=4, seed=seed)
    steps_rows, outcome_rows = step_pairs_from_samples(base, tok, drawn, seed=seed), outcome_pairs(drawn)
    n = min(len(steps_rows), len(outcome_rows))
    rng = random.Random(seed)
    data = {"outcome DPO": rng.sample(outcome_rows, n), "Step-DPO": rng.sample(steps_rows, n)}
    held = random.Random(seed).sample(split_prompts()[1], N_EVAL)
    rows = []
    for name, pairs in data.items():
        path = write_jsonl(root / f"seed{seed}" / f"{name.split()[0].lower()}.jsonl", pairs)
        model_dir = dpo(root / f"seed{seed}", name.split()[0].lower(), path, seed, steps)
        arithmetic = sum(parse_prompt(r["prompt"]).kind == "arithmetic" for r in pairs)
        rows.append({"method": name, "seed": seed, "pairs": n, "arithmetic_pairs": arithmetic,
                     "available": len(steps_rows) if name == "Step-DPO" else len(outcome_rows),
                     **evaluate_policy(model_dir, base, tok, held, seed),
                     "arithmetic_accuracy": arithmetic_accuracy(model_dir, tok)})
        console.print(rows[-1])
    return rows


def measure(seeds: list[int], steps: int) -> dict:
    import tempfile

    console, start = Console(), time.perf_counter()
    torch.set_num_threads(2)
    base_acc = arithmetic_accuracy(str(TOY_BASE), load_pretrained_files(AutoTokenizer, str(TOY_BASE)))
    with tempfile.TemporaryDirectory() as root:
        rows = [r for seed in seeds for r in one_seed(Path(root), seed, steps, console)]
    return {"settings": {"prompts": N_PROMPTS, "samples": 4, "alternatives": 4, "steps": steps, "batch_size": 16,
                         "beta": 0.1, "eval_prompts": N_EVAL, "seeds": seeds},
            "base_arithmetic_accuracy": base_acc, "rows": rows, "seconds": time.perf_counter() - start,
            "machine": "x86_64 CPU, 2 threads, torch " + torch.__version__.split("+")[0]}


def _mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def render(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# Step-DPO on the toy task",
        "",
        "_Generated by `python -m prefalign.evaluation.step_dpo_table`; do not edit by hand._",
        "",
        f"Per seed ({', '.join(map(str, s['seeds']))}): {s['samples']} samples of the toy base on each of "
        f"{s['prompts']} training prompts; outcome pairs (best against worst sample by the gold reward) and "
        "Step-DPO pairs (the first step that lowers the gold reward, against the best of "
        f"{s['alternatives']} sampled replacement steps) from the same samples, cut to the same number; DPO "
        f"(beta {s['beta']}, {s['steps']} steps of {s['batch_size']}) on each. Held-out: {s['eval_prompts']} "
        "prompts (gold reward, win rate against the base, KL to it, words) and the 41 arithmetic prompts "
        f"(greedy, first number right; the base: {result['base_arithmetic_accuracy']:.3f}). "
        f"{result['machine']}, {result['seconds'] / 60:.0f} min.",
        "",
        "| method | seed | pairs (of available) | arithmetic pairs | gold reward | win rate vs base | KL | words "
        "| arithmetic accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['seed']} | {r['pairs']} ({r['available']}) | {r['arithmetic_pairs']} | "
                     f"{r['gold_reward']:.3f} | {r['win_rate']:.3f} | {r['kl']:.2f} | {r['length']:.1f} | "
                     f"{r['arithmetic_accuracy']:.3f} |")
    lines += ["", "Means over seeds:", "", "| method | gold reward | win rate | KL | arithmetic accuracy |",
              "|---|---:|---:|---:|---:|"]
    means = {}
    for method in dict.fromkeys(r["method"] for r in result["rows"]):
        rows = [r for r in result["rows"] if r["method"] == method]
        means[method] = {k: _mean(rows, k) for k in ("gold_reward", "win_rate", "kl", "length", "arithmetic_accuracy")}
        m = means[method]
        lines.append(f"| {method} | {m['gold_reward']:.3f} | {m['win_rate']:.3f} | {m['kl']:.2f} | "
                     f"{m['arithmetic_accuracy']:.3f} |")
    step, outcome = means["Step-DPO"], means["outcome DPO"]
    lines += ["", f"At the same number of pairs Step-DPO's mean gold reward is "
              f"{step['gold_reward'] - outcome['gold_reward']:+.3f} against outcome DPO's, its KL to the base "
              f"{step['kl'] / outcome['kl']:.1f}x as large and its answers {step['length'] - outcome['length']:+.1f} "
              f"words longer; arithmetic accuracy {step['arithmetic_accuracy']:.3f} against "
              f"{outcome['arithmetic_accuracy']:.3f} (41 prompts: one answer is 0.024). A likely reason: a step pair never ends the "
              "answer (no EOS follows a step), so nothing in it teaches the policy when to stop, while outcome "
              "pairs prefer the shorter answer without repeats."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    seeded_table_main(__doc__, measure, render, seeds=(0, 1), steps=150)
