"""Online methods that label without gold rewards or tilt their sampling, on the toy task.

    python -m prefalign.evaluation.scpo_table --doc docs/online_methods.md --json docs/online_methods.json

ScPO (examples/scpo.yaml) trains on the toy arithmetic prompts with its own self-consistency vote as the only
label; it is judged by the exact-answer verifier, which it never sees: single-sample accuracy (temperature
1, `--samples` draws per held-out prompt, averaged) and greedy accuracy on the held-out arithmetic prompts.
RSO (examples/rso.yaml) and online DPO (best vs worst of the same 8 samples, DPO) train with the gold reward
on the toy prompts for the same steps and are judged by the gold reward on held-out prompts."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_text_atomic
from prefalign.config.loading import load_config
from prefalign.config.schema import OnlineTrainConfig
from prefalign.decoding.sampling import sample
from prefalign.decoding.self_consistency import first_number
from prefalign.evaluation.policy_eval import compare_policies
from prefalign.evaluation.rl_table import arithmetic_prompts, greedy_accuracy, verifier
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.online.recipe import train_online
from prefalign.toy.gold_reward import gold_reward
from prefalign.toy.world import parse_prompt, split_prompts
from prefalign.training.metrics import read_metrics

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# examples/scpo.yaml as it is, then settings that train less hard; every one is reported.
SCPO_RUNS = {"scpo (examples/scpo.yaml)": (None, []),
             "scpo, lr 5e-5, margin 0.375": (40, ["trainer.lr=5e-5", "online.min_margin=0.375"]),
             "scpo, lr 5e-5, margin 0.375, no NLL": (40, ["trainer.lr=5e-5", "online.min_margin=0.375",
                                                          "loss.0.alpha=0"]),
             "scpo, lr 5e-5, margin 0.375, reference = policy every 10 steps": (
                 40, ["trainer.lr=5e-5", "online.min_margin=0.375", "schedule.reference_update=hard",
                      "schedule.update_every=10"])}
GOLD_RUNS = {"rso, hinge (examples/rso.yaml)": ("rso.yaml", []),
             "rso, dpo": ("rso.yaml", ["loss.0.name=dpo", "loss.0.beta=0.1"]),
             "a uniform random pair of 8 (rso with beta 1e9), dpo": (
                 "rso.yaml", ["online.rso_beta=1e9", "loss.0.name=dpo", "loss.0.beta=0.1"]),
             "online dpo, best vs worst of 8": ("rso.yaml", ["online.pairs=best_vs_worst", "loss.0.name=dpo",
                                                             "loss.0.beta=0.1"])}


def sampled_accuracy(model: torch.nn.Module, tokenizer: object, prompts: list[str], n: int, seed: int) -> float:
    drawn = sample(model, tokenizer, prompts, n=n, max_new_tokens=16, temperature=1.0, seed=seed)
    return sum(verifier(p, s.text) for p, row in zip(prompts, drawn) for s in row) / (n * len(prompts))


def _train(example: str, overrides: list[str], out: Path, steps: int, seed: int) -> tuple[Path, list[dict], float]:
    cfg = load_config(EXAMPLES / example, overrides + [f"trainer.max_steps={steps}", f"trainer.seed={seed}",
                                                       f"trainer.output_dir={out}", "trainer.progress=false",
                                                       "trainer.save_every=0"], schema=OnlineTrainConfig)
    t0 = time.perf_counter()
    run = train_online(cfg, overwrite=True)
    return run.outputs["model"], read_metrics(run.run_dir), time.perf_counter() - t0


def measure_scpo(steps: int, seed: int, n_samples: int) -> list[dict]:
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    held_out, _ = arithmetic_prompts()
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    rows = [{"method": "base", "steps": 0, "sampled_accuracy": sampled_accuracy(base, tokenizer, held_out, n_samples,
                                                                                  seed),
             "greedy_accuracy": greedy_accuracy(base, tokenizer, held_out), "gold_labels": 0, "seconds": 0.0}]
    for name, (run_steps, overrides) in SCPO_RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            model_dir, metrics, seconds = _train("scpo.yaml", overrides, Path(tmp) / "scpo", run_steps or steps, seed)
            policy = load_pretrained_model(AutoModelForCausalLM, str(model_dir))
        rows.append({"method": name, "steps": run_steps or steps, "gold_labels": 0, "seconds": seconds,
                     "sampled_accuracy": sampled_accuracy(policy, tokenizer, held_out, n_samples, seed),
                     "greedy_accuracy": greedy_accuracy(policy, tokenizer, held_out),
                     "votes_labelled": int(metrics[-1]["online/labels"])})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def vote_quality(k: int, seed: int) -> list[dict]:
    """How good ScPO's labels are for the base: on the training arithmetic prompts, k samples each, by the
    vote margin (most-voted minus least-voted answer's votes, over k), how often the most-voted answer and a
    least-voted answer are the true one. Read here only to explain the result; ScPO never sees it."""
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    _, train = arithmetic_prompts()
    drawn = sample(base, tokenizer, train, n=k, max_new_tokens=16, temperature=1.0, seed=seed)
    buckets: dict[float, list[tuple[bool, bool]]] = {}
    for prompt, row in zip(train, drawn):
        answers = [first_number(s.text) for s in row]
        votes = Counter(a for a in answers if a is not None)
        if not votes:
            continue
        top, top_votes = votes.most_common(1)[0]
        least = min(votes[a] if a is not None else 0 for a in answers)
        truth = str(parse_prompt(prompt).answer)
        least_true = any(a == truth and votes[a] == least for a in answers)
        buckets.setdefault((top_votes - least) / k, []).append((top == truth, least_true))
    return [{"margin": m, "prompts": len(v), "top_correct": sum(a for a, _ in v) / len(v),
             "least_correct": sum(b for _, b in v) / len(v)} for m, v in sorted(buckets.items())]


def measure_gold(steps: int, seed: int, n_eval: int) -> list[dict]:
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    prompts = split_prompts()[1][:n_eval]
    rows = []
    for name, (example, overrides) in GOLD_RUNS.items():
        with tempfile.TemporaryDirectory() as tmp:
            model_dir, metrics, seconds = _train(example, overrides, Path(tmp) / "run", steps, seed)
            policy = load_pretrained_model(AutoModelForCausalLM, str(model_dir))
        c = compare_policies(policy, base, tokenizer, prompts, gold_reward, seed=seed)
        rows.append({"method": name, "steps": steps, "labels": int(metrics[-1]["online/labels"]),
                     "gold_reward": c.policy_reward, "base_gold_reward": c.baseline_reward, "win_rate": c.win_rate,
                     "win_rate_ci": list(c.win_rate_ci), "kl": c.kl, "seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(scpo: list[dict], votes: list[dict], gold: list[dict], n_samples: int, n_eval: int, seed: int) -> str:
    held_out = len(arithmetic_prompts()[0])
    lines = ["# Online methods: ScPO and RSO on the toy task", "",
             "<!-- generated by `python -m prefalign.evaluation.scpo_table`; edit the script, not this table -->", "",
             f"ScPO (examples/scpo.yaml, seed {seed}) learns from its own vote on the toy arithmetic prompts; no gold "
             f"label is read. Accuracy is the verifier's on the {held_out} held-out arithmetic prompts: sampled at "
             f"temperature 1 ({n_samples} draws per prompt, averaged) and greedy.", "",
             "| method | steps | gold labels | sampled accuracy | greedy accuracy | seconds |", "|---|---|---|---|---|---|"]
    for r in scpo:
        lines.append(f"| {r['method']} | {r['steps']} | {r['gold_labels']} | {r['sampled_accuracy']:.3f} | "
                     f"{r['greedy_accuracy']:.3f} | {r['seconds']:.0f} |")
    lines += ["", "How good the vote is as a label for the base (8 samples on each training arithmetic prompt; the "
              "true answer read only for this table):", "",
              "| vote margin | prompts | most-voted answer true | a least-voted answer true |", "|---|---|---|---|"]
    for v in votes:
        lines.append(f"| {v['margin']:.3f} | {v['prompts']} | {v['top_correct']:.3f} | {v['least_correct']:.3f} |")
    lines += ["", f"RSO (examples/rso.yaml) against online DPO on the best vs worst of the same 8 samples a prompt, "
              f"gold reward labels, the same steps and seed; {n_eval} held-out prompts, one sample each, judged "
              "against the base by the gold reward.", "",
              "| method | steps | labels | gold reward (base) | win rate vs base (95% CI) | KL | seconds |",
              "|---|---|---|---|---|---|---|"]
    for r in gold:
        lo, hi = r["win_rate_ci"]
        lines.append(f"| {r['method']} | {r['steps']} | {r['labels']} | {r['gold_reward']:.3f} "
                     f"({r['base_gold_reward']:.3f}) | {r['win_rate']:.3f} ({lo:.3f}-{hi:.3f}) | {r['kl']:.2f} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--gold-steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    scpo = measure_scpo(args.steps, args.seed, args.samples)
    votes = vote_quality(8, args.seed)
    gold = measure_gold(args.gold_steps, args.seed, args.eval_prompts)
    if args.json:
        write_text_atomic(args.json, json.dumps({"scpo": scpo, "votes": votes, "gold": gold}, indent=2))
    text = markdown(scpo, votes, gold, args.samples, args.eval_prompts, args.seed)
    print(text)
    if args.doc:
        write_text_atomic(args.doc, text)


if __name__ == "__main__":
    main()
