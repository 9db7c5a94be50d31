"""Conditional training against filtered SFT and DPO on the same samples of the toy base: the evidence in
docs/conditional_training.md.

    python -m prefalign.evaluation.conditional_table --doc docs/conditional_training.md --json docs/conditional_training.json

Per seed: 4 samples of the base on each of 1,200 training prompts, scored by the gold reward. From the same
samples, each trained from the base with `prefalign sft` or `prefalign train` and the same budget:
  - filtered SFT: each prompt's best sample (rejection-sampling fine-tuning);
  - conditional training (Korbak et al. 2023): all 4 samples, each prompt ending with <|good|> when the
    sample's gold reward is at least the median and <|bad|> otherwise; sampled with <|good|> (and, as a
    check that the token steers, with <|bad|>);
  - DPO on each prompt's best against its worst sample (the quickstart's recipe).
Each policy samples once per held-out prompt (300); columns: mean gold reward, win rate against the base's
samples (gold judge, ties half), words per answer."""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.config.schema import ConditionConfig, SFTTrainConfig
from prefalign.decoding.sampling import sample
from prefalign.evaluation.selection_table import dpo
from prefalign.evaluation.table_script import seeded_table_main
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.toy.gold_reward import gold_reward
from prefalign.toy.preference_data import toy_pairs, write_jsonl
from prefalign.toy.world import split_prompts
from prefalign.training.sft_recipe import train_sft_run

N_PROMPTS, N_EVAL, SFT_LR = 1200, 300, 3e-3  # the toy base was trained at 3e-3; at 3e-4 the tokens barely steered
TOKENS = ConditionConfig()


def sft(root: Path, name: str, data: Path, seed: int, steps: int, condition: ConditionConfig | None) -> tuple[str, float]:
    cfg = SFTTrainConfig.model_validate({
        "model": {"name_or_path": "toy"}, "data": {"train": str(data), "max_length": 128},
        "trainer": {"output_dir": str(root / name), "seed": seed, "max_steps": steps, "batch_size": 16, "lr": SFT_LR,
                    "warmup_steps": 10, "schedule": "cosine", "progress": False, "eval_every": 10**6},
        "condition": condition.model_dump() if condition else None})
    run = train_sft_run(cfg, console=Console(quiet=True), overwrite=True)
    return str(run.outputs["model"]), run.threshold


def gold_of_samples(model_dir: str, prompts: list[str], suffix: str, seed: int) -> tuple[list[float], list[int]]:
    """One sample per prompt (ending with `suffix`), with the model's own tokenizer (which knows the control
    tokens); its gold reward on the prompt and its words."""
    policy = load_pretrained_model(AutoModelForCausalLM, model_dir)
    tok = load_pretrained_files(AutoTokenizer, model_dir)
    if suffix and len(tok(suffix, add_special_tokens=False)["input_ids"]) != 1:
        raise ValueError(f"{model_dir}: its tokenizer has no {suffix} token")
    drawn = sample(policy, tok, [p + suffix for p in prompts], seed=seed)
    return [gold_reward(p, group[0].text) for p, group in zip(prompts, drawn)], [len(g[0].text.split()) for g in drawn]


def row(method: str, seed: int, rewards: list[float], words: list[int], base: list[float]) -> dict:
    wins = [1.0 if r > b else 0.5 if r == b else 0.0 for r, b in zip(rewards, base)]
    return {"method": method, "seed": seed, "gold_reward": sum(rewards) / len(rewards),
            "win_rate": sum(wins) / len(wins), "words": sum(words) / len(words)}


def one_seed(root: Path, seed: int, steps: int, console: Console) -> list[dict]:
    tok = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    pairs = toy_pairs(base, tok, N_PROMPTS, n_samples=4, seed=seed)
    rated = write_jsonl(root / "rated.jsonl", [{"prompt": r["prompt"], "completions": r["samples"]} for r in pairs])
    pair_file = write_jsonl(root / "pairs.jsonl", [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in pairs])
    held = random.Random(seed).sample(split_prompts()[1], N_EVAL)
    base_rewards, base_words = gold_of_samples(str(TOY_BASE), held, "", seed + 1)
    rows = [row("base", seed, base_rewards, base_words, base_rewards)]
    filtered, _ = sft(root, "filtered", rated, seed, steps, None)
    rows.append(row("filtered SFT (best of 4)", seed, *gold_of_samples(filtered, held, "", seed + 1), base_rewards))
    conditional, threshold = sft(root, "conditional", rated, seed, steps, TOKENS)
    for token in (TOKENS.good_token, TOKENS.bad_token):
        rows.append(row(f"conditional, sampled with {token}", seed,
                        *gold_of_samples(conditional, held, token, seed + 1), base_rewards) | {"threshold": threshold})
    rows.append(row("DPO (best vs worst of 4)", seed,
                    *gold_of_samples(dpo(root, "dpo", pair_file, seed, steps), held, "", seed + 1), base_rewards))
    for r in rows:
        console.print(r)
    return rows


def measure(seeds: list[int], steps: int) -> dict:
    console, start = Console(), time.perf_counter()
    torch.set_num_threads(2)
    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as root:
            rows += one_seed(Path(root), seed, steps, console)
    return {"settings": {"prompts": N_PROMPTS, "samples": 4, "steps": steps, "batch_size": 16, "sft_lr": SFT_LR,
                         "eval_prompts": N_EVAL, "seeds": seeds},
            "rows": rows, "seconds": time.perf_counter() - start,
            "machine": "x86_64 CPU, 2 threads, torch " + torch.__version__.split("+")[0]}


def render(result: dict) -> str:
    s = result["settings"]
    methods = list(dict.fromkeys(r["method"] for r in result["rows"]))
    thresholds = sorted({round(r["threshold"], 3) for r in result["rows"] if "threshold" in r})
    lines = [
        "# Conditional training on the toy task",
        "",
        "_Generated by `python -m prefalign.evaluation.conditional_table`; do not edit by hand._",
        "",
        f"Per seed ({', '.join(map(str, s['seeds']))}): {s['samples']} samples of the toy base on each of "
        f"{s['prompts']} training prompts, scored by the gold reward. Filtered SFT trains on each prompt's best "
        "sample; conditional training (Korbak et al. 2023, `prefalign sft` with `condition`) on all of them, "
        "the prompt ending with <|good|> where the sample's gold reward is at least the median "
        f"({', '.join(map(str, thresholds))}) and <|bad|> below; DPO on each prompt's best against its worst "
        f"sample. Each runs {s['steps']} steps of {s['batch_size']} from the base (SFT learning rate "
        f"{s['sft_lr']:g}, DPO the quickstart's). One sample per held-out prompt ({s['eval_prompts']}); win rate "
        f"against the base's sample by the gold reward, ties half. {result['machine']}, "
        f"{result['seconds'] / 60:.0f} min.",
        "",
        "| method | " + " | ".join(f"seed {seed}: gold, win rate, words" for seed in s["seeds"]) + " | mean gold reward |",
        "|---|" + "---:|" * (len(s["seeds"]) + 1),
    ]
    for method in methods:
        rows = [r for r in result["rows"] if r["method"] == method]
        cells = [f"{r['gold_reward']:.3f}, {r['win_rate']:.3f}, {r['words']:.1f}" for r in rows]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {sum(r['gold_reward'] for r in rows) / len(rows):.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    seeded_table_main(__doc__, measure, render, seeds=(0, 1), steps=600)
