"""prefalign against TRL's GRPOTrainer: the same GRPO run, side by side, in one invocation.

    python bench/rl_throughput.py [--quick] [--json OUT]

Both tools train the same randomly initialised Llama (8 layers, d=512, 32k word-level vocabulary, 58.5M
parameters, bench/dpo_throughput.py's) on the same prompts: P prompts a step, G samples each, exactly
`new_tokens` new tokens (the random model emits EOS about once in 32k tokens, so completions run to the
limit in both tools; generated tokens are counted as made), fp32, the same AdamW learning rate, constant schedule, GRPO's group-normalised advantages with PPO's
clip (0.2), each sequence's token mean averaged (TRL loss_type "grpo"), no KL term (beta 0, TRL's default),
one optimizer step per generation, plain `generate` for sampling (no vLLM), a reward that costs nothing (the
completion's length in words). Each tool runs in its own child process, prefalign first, so peak resident
memory (ru_maxrss) is that run's alone; the first step is a warm-up and the clock runs over the others.
Prints steps/s, generated tokens/s, peak memory and their ratios, and prefalign's split of a step into
generate / score / train. `--json OUT` writes a `results` list with `speedup` and `memory_ratio`."""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_throughput import build_model_dir  # noqa: E402

CONFIGS = {"quick": dict(prompts=4, group=4, new_tokens=32, steps=4),
           "full": dict(prompts=8, group=8, new_tokens=64, steps=8)}
LR, SEED = 1e-6, 0


def write_prompts(root: Path, n: int) -> Path:
    words = [f"w{i}" for i in range(100, 4100)]
    rows = [{"prompt": " ".join(words[(37 * i + 11 * j) % len(words)] for j in range(24))} for i in range(n)]
    path = root / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_prefalign(model_dir: str, prompts: str, c: dict, times: list[float]) -> dict:
    from prefalign.config.schema import RLTrainConfig
    from prefalign.rl.recipe import train_rl
    from prefalign.training.metrics import read_metrics

    out = tempfile.mkdtemp()
    cfg = RLTrainConfig.model_validate({
        "model": {"name_or_path": model_dir}, "loss": [{"name": "ppo_clip", "eps_low": 0.2, "eps_high": 0.2}],
        "rl": {"prompts": prompts, "group_size": c["group"], "advantage": "grpo", "aggregation": "sequence_mean",
               "rewards": [{"name": "length"}], "kl": {"placement": "none"}, "max_new_tokens": c["new_tokens"],
               "generation_batch_size": c["prompts"] * c["group"]},
        "trainer": {"output_dir": out, "max_steps": c["steps"], "batch_size": c["prompts"], "lr": LR,
                    "schedule": "constant", "progress": False, "seed": SEED}})
    train_rl(cfg, on_step=lambda step, m: times.append(time.perf_counter()))
    metrics = read_metrics(Path(out))[1:]
    return {k: sum(m[f"time/{k}"] for m in metrics) / len(metrics) for k in ("generate", "score", "train")} | {
        "tokens_per_step": sum(m["rl/response_length"] for m in metrics) / len(metrics) * c["prompts"] * c["group"]}


def run_trl(model_dir: str, prompts: str, c: dict, times: list[float]) -> dict:
    from datasets import load_dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    def length_reward(completions, **kwargs):
        return [len(str(x).split()) for x in completions]

    args = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=c["prompts"] * c["group"],
                      num_generations=c["group"], max_completion_length=c["new_tokens"], learning_rate=LR,
                      lr_scheduler_type="constant", max_steps=c["steps"], beta=0.0, epsilon=0.2, loss_type="grpo",
                      logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, seed=SEED,
                      temperature=1.0, top_k=0, gradient_checkpointing=False, bf16=False,
                      dataloader_num_workers=0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = load_dataset("json", data_files=prompts, split="train")
    trainer = GRPOTrainer(model=model_dir, reward_funcs=length_reward, args=args, train_dataset=data,
                          processing_class=tok, callbacks=[Clock()])
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    return {"tokens_per_step": sum(lengths[1:]) / max(len(lengths) - 1, 1) * c["prompts"] * c["group"]}


def child(tool: str, config: str, model_dir: str, prompts: str) -> dict:
    import torch

    torch.manual_seed(SEED)
    c = CONFIGS[config]
    times = [time.perf_counter()]
    extra = (run_prefalign if tool == "prefalign" else run_trl)(model_dir, prompts, c, times)
    measured = times[2:]  # from the end of the warm-up step
    seconds = measured[-1] - times[1]
    steps = len(measured)
    return {"tool": tool, "config": config, "steps_per_s": steps / seconds,
            "generated_tokens_per_s": extra["tokens_per_step"] * steps / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}


def spawn(tool: str, config: str, model_dir: Path, prompts: Path) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import rl_throughput as b; "
            f"print('RESULT ' + json.dumps(b.child({tool!r}, {config!r}, {str(model_dir)!r}, {str(prompts)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{tool} {config} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small configuration only (a few minutes)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configs = ["quick"] if args.quick else ["quick", "full"]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model_dir(root)
        prompts = write_prompts(root, 64)
        for config in configs:
            ours, trl = spawn("prefalign", config, model_dir, prompts), spawn("trl", config, model_dir, prompts)
            row = {"config": config, **CONFIGS[config], "prefalign": ours, "trl": trl,
                   "speedup": ours["steps_per_s"] / trl["steps_per_s"],
                   "memory_ratio": ours["peak_rss_mib"] / trl["peak_rss_mib"]}
            results.append(row)
            print(f"{config}: steps/s prefalign {ours['steps_per_s']:.3f} TRL {trl['steps_per_s']:.3f} "
                  f"(x{row['speedup']:.2f}); generated tokens/s {ours['generated_tokens_per_s']:.0f} vs "
                  f"{trl['generated_tokens_per_s']:.0f}; peak RSS {ours['peak_rss_mib']:.0f} vs "
                  f"{trl['peak_rss_mib']:.0f} MiB (x{row['memory_ratio']:.2f}); prefalign per step: generate "
                  f"{ours['generate']:.2f}s, score {ours['score']:.3f}s, train {ours['train']:.2f}s", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
