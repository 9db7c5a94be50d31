"""Steerable multi-objective alignment on the toy task, gold reward against brevity: preference vectors
(`prefalign merge --method preference_vectors`) and Directional Preference Alignment
(prefalign/pluralistic/directional.py), each steered to the weightings MODPO's and RiC's fronts use, and
what two user groups with conflicting tastes get from each; and VPL's user latents (evaluation/vpl_eval.py)
against one Bradley-Terry reward; context-aware preference models (evaluation/context_eval.py). Writes docs/pluralistic.md (and .json).

    python -m prefalign.evaluation.pluralistic_table --doc docs/pluralistic.md --json docs/pluralistic.json

Data: the toy base's 4 samples on each of 1000 training prompts (the pairs MODPO and RiC start from). Every
policy is scored on the 200 held-out prompts RiC's front uses, one sample each at temperature 1 with the
same seed, so RiC's points (docs/ric_front.json) are comparable and are listed from that file."""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_result
from prefalign.config.schema import TrainerConfig
from prefalign.evaluation.context_eval import render_context, run_context
from prefalign.evaluation.modpo_sweep import objective_means, score_policy
from prefalign.evaluation.selection_table import dpo, minilm_path
from prefalign.evaluation.vpl_eval import render_vpl, run_vpl
from prefalign.merging.merge import MergeRecipe, merge_folders
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.online.scorers import build_scorer
from prefalign.pluralistic import directional as dpa
from prefalign.pluralistic.dpa_recipe import rsf_round
from prefalign.toy.gold_reward import brevity_reward, gold_reward
from prefalign.toy.preference_data import cached_toy_pairs, write_jsonl
from prefalign.toy.world import split_prompts

OBJECTIVES = {"gold": gold_reward, "brevity": brevity_reward}
WEIGHTS = [1.0, 0.8, 0.6, 0.5, 0.4, 0.2, 0.0]  # the gold weight; brevity gets the rest
GROUPS = {"quality-first": (0.8, 0.2), "brevity-first": (0.2, 0.8)}  # two user groups' (gold, brevity) weights


def objective_pairs(samples: list[dict], objective: str, reverse: bool = False) -> list[dict]:
    """Per prompt, its best sample against its worst by one objective (ties skipped); `reverse` swaps them."""
    fn, rows = OBJECTIVES[objective], []
    for r in samples:
        scored = sorted((fn(r["prompt"], s["response"]), s["response"]) for s in r["samples"])
        (low, worst), (high, best) = scored[0], scored[-1]
        if high > low:
            a, b = (worst, best) if reverse else (best, worst)
            rows.append({"prompt": r["prompt"], "chosen": a, "rejected": b})
    return rows


def vector_models(root: Path, samples: list[dict], seed: int, steps: int, console: Console) -> dict[str, str]:
    """DPO from the base on each objective's pairs (plus) and on the same pairs reversed (minus)."""
    models = {}
    for objective in OBJECTIVES:
        for sign, reverse in (("+", False), ("-", True)):
            name = f"{objective}{sign}"
            console.print(f"DPO {name}")
            data = write_jsonl(root / f"{name}.jsonl", objective_pairs(samples, objective, reverse))
            models[name] = dpo(root, f"dpo-{objective}{'-minus' if reverse else ''}", data, seed, steps)
    return models


def merged_front(root: Path, models: dict[str, str], method: str, prompts: list[str], seed: int,
                 scale: float = 1.0) -> list[dict]:
    """The merge of the per-objective models at every weighting (coefficients scale * (w, 1 - w)), each scored
    on both objectives."""
    points = []
    for w in WEIGHTS:
        weights = [scale * w, scale * (1 - w)]
        if method == "preference_vectors":
            paths = [models["gold+"], models["gold-"], models["brevity+"], models["brevity-"]]
        else:
            paths = [models["gold+"], models["brevity+"]]
        out = merge_folders(paths, root / f"{method}-{scale}-{w:.2f}", MergeRecipe(method, weights), str(TOY_BASE))
        points.append({"gold_weight": w, "scores": score_policy(out, prompts, OBJECTIVES, seed + 1)})
    return points


def dpa_front(samples: list[dict], prompts: list[str], rounds: int, steps: int, n: int, seed: int,
              console: Console) -> dict:
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    model = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    base_rewards = np.array([[fn(r["prompt"], s["response"]) for fn in OBJECTIVES.values()]
                             for r in samples for s in r["samples"]])
    scale = dpa.ObjectiveScale.fit(base_rewards)
    trainer = TrainerConfig(seed=seed, max_steps=steps, batch_size=32, lr=1e-3, schedule="cosine", warmup_steps=20,
                            log_every=50, save_every=0, progress=False)
    train_prompts = [r["prompt"] for r in samples]
    scorers = [build_scorer(name) for name in OBJECTIVES]
    for k in range(rounds):
        console.print(f"DPA: RSF round {k + 1} of {rounds}")
        with tempfile.TemporaryDirectory() as run_dir:
            rsf_round(model, tokenizer, train_prompts, scorers, scale, trainer.model_copy(update={"seed": seed + k}),
                      Path(run_dir), n, seed + 10 * k, console)
    points = []
    for w in WEIGHTS:
        step = dpa.step_for_weights((w, 1 - w))
        scores = objective_means(model.eval(), tokenizer, prompts, OBJECTIVES, seed + 1,
                                 [dpa.condition(p, step) for p in prompts])
        points.append({"gold_weight": w, "step": step, "scores": scores})
    return {"scale": {"mean": scale.mean, "sd": scale.sd}, "points": points}


def group_rewards(points: list[dict]) -> dict[str, float]:
    """Each group's reward w . (gold, brevity) from the point steered to its weights (or the only point)."""
    out = {}
    for group, (wg, wb) in GROUPS.items():
        p = points[0] if len(points) == 1 else next(q for q in points if abs(q["gold_weight"] - wg) < 1e-9)
        out[group] = wg * p["scores"]["gold"] + wb * p["scores"]["brevity"]
    out["worst group"] = min(out.values())
    return out


def ric_points(path: Path) -> list[dict] | None:
    if not path.exists():
        return None
    return [{"gold_weight": p["weights"]["gold"], "scores": p["scores"]}
            for p in json.loads(path.read_text())["points"]]


def run(root: Path, steps: int, dpa_rounds: int, dpa_steps: int, n_eval: int, seed: int, console: Console) -> dict:
    start = time.perf_counter()
    torch.set_num_threads(2)
    samples = [json.loads(line) for line in
               cached_toy_pairs(root / "data", seed=seed, n_prompts=1000, say=console.print).read_text().splitlines()]
    prompts = random.Random(seed).sample(split_prompts()[1], n_eval)
    models = vector_models(root, samples, seed, steps, console)
    methods = {"base": [{"gold_weight": None, "scores": score_policy(TOY_BASE, prompts, OBJECTIVES, seed + 1)}],
               "DPO on gold pairs (one model)": [{"gold_weight": None, "scores": score_policy(
                   models["gold+"], prompts, OBJECTIVES, seed + 1)}],
               "task arithmetic of the plus models": merged_front(root, models, "task_arithmetic", prompts, seed),
               "preference vectors, eta = (w, 1 - w)": merged_front(root, models, "preference_vectors", prompts,
                                                                     seed),
               "preference vectors, eta = (w, 1 - w) / 2": merged_front(root, models, "preference_vectors",
                                                                         prompts, seed, scale=0.5)}
    dpa_result = dpa_front(samples, prompts, dpa_rounds, dpa_steps, 4, seed, console)
    methods["DPA (RSF)"] = dpa_result["points"]
    fronts_minutes = (time.perf_counter() - start) / 60
    console.print("VPL")
    vpl_result = run_vpl(minilm_path(), seed)
    console.print("context-aware preference model")
    context_result = run_context(minilm_path(), seed)
    ric = ric_points(Path("docs/ric_front.json"))
    if ric is not None:
        methods["RiC (docs/ric_front.json)"] = ric
    return {"settings": {"steps": steps, "dpa_rounds": dpa_rounds, "dpa_steps": dpa_steps, "eval_prompts": n_eval,
                         "seed": seed, "minutes": fronts_minutes},
            "dpa_scale": dpa_result["scale"], "methods": methods, "vpl": vpl_result,
            "context": context_result,
            "groups": {name: group_rewards(points) for name, points in methods.items()}}


def dominates(a: dict[str, float], b: dict[str, float]) -> bool:
    return all(a[k] >= b[k] for k in b) and any(a[k] > b[k] for k in b)


def render(result: dict) -> str:
    s = result["settings"]
    lines = ["# Steerable and pluralistic alignment on the toy task", "",
             "_Generated by `python -m prefalign.evaluation.pluralistic_table`; do not edit by hand._", "",
             "Two objectives, the gold reward and brevity (-0.1 per word). Preference vectors: DPO (quickstart "
             f"settings, {s['steps']} steps of 16) from the base on each objective's best-vs-worst pairs of the "
             "base's 4 samples on 1000 training prompts (plus) and on the same pairs reversed (minus), merged as "
             "theta_0 + eta_1 (gold+ - gold-) + eta_2 (brevity+ - brevity-); task arithmetic merges the plus "
             f"models alone, theta_0 + w tau_gold+ + (1 - w) tau_brevity+. DPA: {s['dpa_rounds']} rounds of "
             f"preference-conditioned rejection sampling (4 samples per training prompt, a random direction each, "
             f"SFT {s['dpa_steps']} steps of 32 at lr 1e-3 on the best for it), steered with the direction "
             "nearest (w, 1 - w) in 10-degree steps; its rewards are the toy's true objectives, standardised "
             "(no reward model learnt). Every row: means over "
             f"{s['eval_prompts']} held-out prompts, one sample each at temperature 1, seed {s['seed']}; "
             f"x86_64 CPU, 2 threads, torch {torch.__version__.split('+')[0]}; the fronts took {s['minutes']:.0f} min.",
             "",
             "On the front: no other row of the table is at least as good on both objectives and better on one.", "",
             "| method | gold weight | gold | brevity | on the front |", "|---|---:|---:|---:|---|"]
    every = [p["scores"] for points in result["methods"].values() for p in points]
    for name, points in result["methods"].items():
        for p in points:
            w = "" if p["gold_weight"] is None else f"{p['gold_weight']:.2f}"
            front = "yes" if not any(dominates(q, p["scores"]) for q in every) else ""
            lines.append(f"| {name} | {w} | {p['scores']['gold']:.3f} | {p['scores']['brevity']:.3f} | {front} |")
    lines += ["", "Two user groups: quality-first (0.8 gold + 0.2 brevity) and brevity-first (0.2 gold + 0.8 "
              "brevity). Each steerable method serves a group the point steered to its weights; a single model "
              "serves both alike.", "", "| method | quality-first | brevity-first | worst group |",
              "|---|---:|---:|---:|"]
    for name, g in result["groups"].items():
        lines.append(f"| {name} | {g['quality-first']:.3f} | {g['brevity-first']:.3f} | {g['worst group']:.3f} |")
    best = max(result["groups"].items(), key=lambda kv: kv[1]["worst group"])
    lines += ["", f"Best worst-group reward here: {best[0]} ({best[1]['worst group']:.3f}). One seed; differences of "
              "a few hundredths are within sampling noise."]
    if "vpl" in result:
        lines += render_vpl(result["vpl"])
    if "context" in result:
        lines += render_context(result["context"])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pluralistic_table"))
    parser.add_argument("--doc", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--dpa-rounds", type=int, default=2)
    parser.add_argument("--dpa-steps", type=int, default=300)
    parser.add_argument("--eval-prompts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-json", type=Path, default=None, help="only re-render --doc from a finished run's json")
    args = parser.parse_args()
    if args.from_json:
        write_result(json.loads(args.from_json.read_text()), None, args.doc, render)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.out, args.steps, args.dpa_rounds, args.dpa_steps, args.eval_prompts, args.seed, Console())
    write_result(result, args.json, args.doc, render)


if __name__ == "__main__":
    main()
