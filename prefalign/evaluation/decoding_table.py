"""Every decoding strategy on the same held-out toy prompts, one table: the evidence in docs/decoding.md.

    python -m prefalign.evaluation.decoding_table [--out runs/decoding] [--prompts 60] [--doc docs/decoding.md]

It builds what the strategies need from the toy base alone (nothing downloaded):
  - a DPO policy aligned to the gold reward (the quickstart's recipe, shorter), as Transfer Q*'s baseline;
  - a Bradley-Terry reward model on the toy base trained on the same pairs of base samples (150 steps of 16);
  - two prefix value models on 1,024 rollouts of the base scored by the gold reward: CD-FUDGE (lambda = 1)
    and a TD(lambda = 0.5) value for VAS.
Then every strategy decodes the same prompts (max 48 new tokens) and is scored by the gold reward. Columns:
mean gold reward; win rate against plain sampling on the same prompt (gold judge, ties half); the extra
negative log-likelihood of its responses under the base compared with plain samples (nats per response,
a distance from the base distribution; 0 for plain sampling); tokens drawn in all (discarded ones
included); seconds. Self-consistency strategies also run on held-out arithmetic prompts and report
accuracy (the first number stated is the answer), against a single sample's, averaged over 5 seeds (there
are only 41 held-out arithmetic prompts). Knobs (weights, k) were set on training prompts, not these."""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_text_atomic
from prefalign.decoding.guidance import PrefixScorer
from prefalign.decoding.sampling import Sample
from prefalign.decoding.strategies import DecodeSetup, decode
from prefalign.decoding.value_model import collect_rollouts, new_value_model, train_value
from prefalign.evaluation.pairwise_judges import compare, gold_batch_reward
from prefalign.evaluation.policy_eval import completion_logps
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.toy.world import parse_prompt, split_prompts

# (row name, strategy, setup overrides)
ROWS = [
    ("sample", "sample", {}),
    ("best-of-8 (gold)", "best-of-n", {"k": 8}),
    ("rejection, r >= 1 (gold)", "rejection", {"k": 8, "threshold": 1.0}),
    ("ARGS (reward model, w=4, k=10)", "args", {"weight": 4.0}),
    ("ARGS (gold, w=2, k=10)", "args", {"weight": 2.0, "reward_model": None}),
    ("CD tokenwise (FUDGE value, lambda=2)", "cd-token", {"weight_values": 2.0}),
    ("CD blockwise (FUDGE value, 4 blocks of 8)", "cd-block", {"k": 4}),
    ("VAS (TD value, beta=2)", "vas", {"vas": True}),
    ("Transfer Q* direct (DPO baseline, alpha=2)", "transfer-q", {"weight": 2.0, "k": 5}),
    ("RAIN rewind (gold)", "rain", {}),
    ("CFG (empty negative prompt, 1.5)", "cfg", {}),
]
CONSISTENCY = [("single sample", "sample"), ("self-consistency, 8", "self-consistency"),
               ("adaptive-consistency, up to 8", "adaptive-consistency"), ("soft self-consistency, 8", "soft-consistency"),
               ("universal self-consistency, 8", "universal-consistency")]


def _rollout_values(model: torch.nn.Module, tok: object, train_prompts: list[str], seed: int) -> dict[str, PrefixScorer]:
    rollouts = collect_rollouts(model, tok, random.Random(seed).sample(train_prompts, 256), gold_batch_reward, n=4,
                                seed=seed)
    values = {}
    for name, lam in (("fudge", 1.0), ("td", 0.5)):
        torch.manual_seed(seed)
        v = new_value_model(str(TOY_BASE))
        train_value(v, rollouts, tok.pad_token_id, lam=lam, steps=300, seed=seed)
        values[name] = v
    return values


def _reward_model(out: Path, pairs: Path, seed: int) -> PrefixScorer:
    from prefalign.config.schema import (
        DataConfig,
        ModelConfig,
        RewardConfig,
        RewardTrainConfig,
        TrainerConfig,
    )
    from prefalign.rewards.train import train_reward_model

    run = train_reward_model(RewardTrainConfig(
        model=ModelConfig(name_or_path="toy"), data=DataConfig(train=str(pairs), eval_fraction=0.05, max_length=96),
        reward=RewardConfig(center=0.01), trainer=TrainerConfig(output_dir=str(out / "rm"), max_steps=150, batch_size=16,
                                                             lr=3e-4, schedule="constant", progress=False, seed=seed)),
        console=Console(quiet=True), overwrite=True)
    return PrefixScorer.from_reward_model(str(run.model_dir))


def _dpo_policy(out: Path, seed: int) -> tuple[torch.nn.Module, Path]:
    from prefalign.quickstart import quickstart_config
    from prefalign.toy.preference_data import write_toy_pairs
    from prefalign.training.preference import train_preference

    pairs = write_toy_pairs(out / "data", seed=seed, n_prompts=1200)
    run = train_preference(quickstart_config(out, seed, steps=200), console=Console(quiet=True), overwrite=True)
    return load_pretrained_model(AutoModelForCausalLM, str(run.outputs["model"])).eval(), pairs


def _nll(model: torch.nn.Module, samples: list[Sample], pad: int) -> float:
    return float(-completion_logps(model, samples, pad).mean())


def _accuracy(samples: list[Sample]) -> float:
    from prefalign.decoding.self_consistency import first_number

    return float(np.mean([first_number(s.text) == str(parse_prompt(s.prompt).answer) for s in samples]))


def build_table(out: Path, n_prompts: int = 60, seed: int = 0, console: Console | None = None) -> dict:
    console = console or Console()
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE)).eval()
    train_prompts, held = split_prompts()
    rng = random.Random(seed)
    prompts = rng.sample(held, n_prompts)
    sums = [p for p in held if parse_prompt(p).kind == "arithmetic"]
    arithmetic = rng.sample(sums, min(n_prompts, len(sums)))

    start = time.perf_counter()
    console.print("building: DPO baseline, reward model, value models")
    dpo, pairs = _dpo_policy(out, seed)
    rm = _reward_model(out, pairs, seed)
    values = _rollout_values(base, tok, train_prompts, seed)
    build_s = time.perf_counter() - start

    def setup(overrides: dict) -> DecodeSetup:
        o = dict(overrides)
        vas, w_values = o.pop("vas", False), o.pop("weight_values", 2.0)
        s = DecodeSetup(base, tok, score=gold_batch_reward, reward_model=rm,
                        values=[(values["td"] if vas else values["fudge"], w_values)], baseline=dpo, seed=seed + 1,
                        max_new_tokens=48, horizon=16)
        for k, v in o.items():
            setattr(s, k, v)
        return s

    rows, plain = [], None
    for name, strategy, overrides in ROWS:
        t = time.perf_counter()
        decoded = decode(strategy, setup(overrides), prompts)
        seconds = time.perf_counter() - t
        rewards = gold_batch_reward(prompts, [s.text for s in decoded.samples])
        if plain is None:
            plain = (decoded.samples, rewards)
        win = float(np.mean([compare(a, b) for a, b in zip(rewards, plain[1])]))
        rows.append({"strategy": name, "gold_reward": float(np.mean(rewards)), "win_rate_vs_sample": win,
                     "extra_nll": _nll(base, decoded.samples, tok.pad_token_id) - _nll(base, plain[0], tok.pad_token_id),
                     "tokens_drawn": decoded.tokens_drawn, "seconds": round(seconds, 2)})
        console.print(f"{name:48s} gold {rows[-1]['gold_reward']:+.3f}  win {win:.3f}  {seconds:.1f}s")
    consistency = []
    for name, strategy in CONSISTENCY:
        t, accuracy, tokens = time.perf_counter(), [], 0
        for s in range(5):
            decoded = decode(strategy, setup({"k": 8, "seed": seed + 1 + s}), arithmetic)
            accuracy.append(_accuracy(decoded.samples))
            tokens += decoded.tokens_drawn
        consistency.append({"strategy": name, "accuracy": float(np.mean(accuracy)), "accuracy_by_seed": accuracy,
                            "tokens_drawn": tokens, "seconds": round(time.perf_counter() - t, 2)})
        console.print(f"{name:48s} accuracy {consistency[-1]['accuracy']:.3f}")
    result = {"prompts": n_prompts, "arithmetic_prompts": len(arithmetic), "seed": seed, "build_seconds": round(build_s, 1), "strategies": rows,
              "consistency": consistency, "torch": torch.__version__}
    write_text_atomic(out / "decoding_table.json", json.dumps(result, indent=2))
    return result


def markdown(result: dict) -> str:
    lines = ["| strategy | gold reward | win rate vs sampling | Δ NLL under base | tokens drawn | seconds |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['strategy']} | {r['gold_reward']:+.3f} | {r['win_rate_vs_sample']:.3f} | {r['extra_nll']:+.2f} | "
              f"{r['tokens_drawn']} | {r['seconds']:.1f} |" for r in result["strategies"]]
    lines += ["", f"| {result['arithmetic_prompts']} arithmetic prompts x 5 seeds | accuracy | tokens drawn | seconds |",
              "|---|---:|---:|---:|"]
    lines += [f"| {r['strategy']} | {r['accuracy']:.3f} | {r['tokens_drawn']} | {r['seconds']:.1f} |"
              for r in result["consistency"]]
    return "\n".join(lines)


def write_into_doc(doc: Path, table: str) -> None:
    """Replaces the text between the doc's table markers."""
    start, end = "<!-- decoding-table:start -->", "<!-- decoding-table:end -->"
    text = doc.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{doc}: missing the markers {start} / {end}")
    head, rest = text.split(start, 1)
    write_text_atomic(doc, head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/decoding"))
    parser.add_argument("--prompts", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--doc", type=Path, help="write the table into this markdown file, between its markers")
    a = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = build_table(a.out, a.prompts, a.seed)
    table = markdown(result)
    print(table)
    if a.doc:
        write_into_doc(a.doc, table)


if __name__ == "__main__":
    main()
