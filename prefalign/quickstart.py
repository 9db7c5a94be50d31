"""The main job: bundled toy base -> preference data -> DPO -> evaluation on held-out prompts -> report.

Everything is local and seeded; on 2 CPU cores it finishes in a few minutes."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import DataConfig, LossTerm, ModelConfig, TrainConfig, TrainerConfig
from prefalign.evaluation.pairwise_judges import RewardJudge, gold_batch_reward
from prefalign.evaluation.policy_eval import evaluate_policies, evaluation_sections
from prefalign.evaluation.report import write_report
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.toy.preference_data import write_toy_pairs
from prefalign.toy.world import split_prompts
from prefalign.training.metrics import read_metrics
from prefalign.training.preference import train_preference


def quickstart_config(out: Path, seed: int = 0, steps: int = 400) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(name_or_path="toy"),
        data=DataConfig(train=str(out / "data" / "toy_pairs.jsonl"), eval_fraction=0.05, max_length=128),
        loss=[LossTerm(name="dpo", beta=0.1)],
        trainer=TrainerConfig(output_dir=str(out / "run"), seed=seed, max_steps=steps, batch_size=16, lr=2e-4,
                              warmup_steps=10, schedule="cosine", eval_every=50, log_every=5, eval_batch_size=64),
    )


def run_quickstart(out: Path, seed: int = 0, steps: int = 400, n_prompts: int = 2400, n_eval_prompts: int = 300,
                   console: Console | None = None) -> dict:
    console = console or Console()
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    console.rule("1/3 preference data: sample the base 4 times per prompt, rank by the gold reward")
    data_path = write_toy_pairs(out / "data", seed=seed, n_prompts=n_prompts)
    cfg = quickstart_config(out, seed, steps)
    write_text_atomic(out / "quickstart.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    console.print(f"wrote {data_path}")

    console.rule("2/3 DPO")
    run = train_preference(cfg, console=console, overwrite=True)

    console.rule("3/3 evaluation on held-out prompts")
    _, held_out = split_prompts()
    prompts = random.Random(seed).sample(held_out, min(n_eval_prompts, len(held_out)))
    tokenizer = load_pretrained_files(AutoTokenizer, str(run.outputs["model"]))
    aligned = load_pretrained_model(AutoModelForCausalLM, str(run.outputs["model"]))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    ev = evaluate_policies({"aligned": aligned}, base, tokenizer, prompts, RewardJudge(gold_batch_reward, "gold"),
                           gold_batch_reward, seed=seed + 1)
    result = ev.policies[0]

    summary = {
        "base": {"gold_reward": ev.baseline_reward, "mean_length": ev.baseline_length},
        "aligned": {"gold_reward": result.mean_reward, "mean_length": result.mean_length},
        "win_rate": result.win_rate,
        "win_rate_ci95": list(result.win_rate_ci),
        "lc_win_rate": result.lc_win_rate,
        "kl": result.kl,
        "eval_prompts": result.n_prompts,
        "train_pairs": len(run.data.train),
        "steps": run.loop.steps,
        "final_eval": {k: v for k, v in run.loop.eval_metrics.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    write_text_atomic(out / "samples.jsonl", "".join(json.dumps(x) + "\n" for x in ev.samples))
    write_report(out / "report.html", "prefalign quickstart: DPO on the toy task", summary, read_metrics(run.run_dir),
                 sections=evaluation_sections(ev))
    _print_summary(console, summary, out)
    return summary


def _print_summary(console: Console, s: dict, out: Path) -> None:
    table = Table(title="held-out prompts, one sample each (temperature 1)")
    table.add_column("model")
    table.add_column("gold reward", justify="right")
    table.add_column("mean length (tokens)", justify="right")
    table.add_row("base", f"{s['base']['gold_reward']:.3f}", f"{s['base']['mean_length']:.1f}")
    table.add_row("aligned (DPO)", f"{s['aligned']['gold_reward']:.3f}", f"{s['aligned']['mean_length']:.1f}")
    console.print(table)
    lo, hi = s["win_rate_ci95"]
    console.print(f"win rate aligned vs base: {s['win_rate']:.1%} (95% CI {lo:.1%}-{hi:.1%}); "
                  f"KL(aligned || base) = {s['kl']:.2f} nats/response; {s['steps']} steps in {s['seconds']:.0f}s")
    console.print(f"wrote {out / 'summary.json'}, {out / 'samples.jsonl'} (every sample, base and aligned) and "
                  f"{out / 'report.html'}")
