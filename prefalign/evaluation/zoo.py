"""The loss zoo: every preference loss on the toy task with the same data, budget and seed, in one table.

Per loss: held-out preference accuracy (how often the trained policy's implicit reward against the base,
log pi/pi_base, ranks the held-out chosen response above the rejected one, whatever the loss optimised),
mean gold reward and win rate against the base on held-out prompts, KL(policy || base), and seconds."""

from __future__ import annotations

import json
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import LossTerm, ScheduleConfig
from prefalign.data.collate import fixed_batches
from prefalign.evaluation.policy_eval import compare_policies
from prefalign.losses.registry import build_losses
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.models.reference import FrozenCopyReference
from prefalign.quickstart import quickstart_config
from prefalign.toy.gold_reward import gold_reward
from prefalign.toy.preference_data import joint_rows, rated_rows, triple_rows, write_jsonl, write_toy_pairs
from prefalign.toy.world import split_prompts
from prefalign.training.loop import evaluate
from prefalign.training.objectives import PairObjective
from prefalign.training.preference import prepare_data, train_preference

# (label, loss terms). Each loss runs with its own default parameters unless a value is given here.
ZOO: list[tuple[str, list[dict]]] = [
    ("dpo", [{"name": "dpo"}]),
    ("cdpo (label_smoothing 0.1)", [{"name": "dpo", "label_smoothing": 0.1}]),
    ("robust_dpo (e 0.1)", [{"name": "robust_dpo"}]),
    ("ipo", [{"name": "ipo"}]),
    ("hinge", [{"name": "hinge"}]),
    ("sppo_hard", [{"name": "sppo_hard"}]),
    ("exo", [{"name": "exo"}]),
    ("rdpo", [{"name": "rdpo"}]),
    ("ln_dpo", [{"name": "ln_dpo"}]),
    ("ld_dpo", [{"name": "ld_dpo"}]),
    ("f_dpo forward_kl", [{"name": "f_dpo", "divergence": "forward_kl"}]),
    ("f_dpo js", [{"name": "f_dpo", "divergence": "js"}]),
    ("f_dpo alpha 0.5", [{"name": "f_dpo", "divergence": "alpha"}]),
    ("nca", [{"name": "nca"}]),
    ("bco", [{"name": "bco"}]),
    ("apo_zero", [{"name": "apo_zero"}]),
    ("apo_down", [{"name": "apo_down"}]),
    ("discopop", [{"name": "discopop"}]),
    ("aot (paired)", [{"name": "aot"}]),
    ("aot (unpaired)", [{"name": "aot", "paired": False}]),
    ("simpo", [{"name": "simpo"}]),
    ("simpo (label_smoothing 0.1)", [{"name": "simpo", "label_smoothing": 0.1}]),
    ("alphapo", [{"name": "alphapo"}]),
    ("cpo", [{"name": "cpo"}]),
    ("cpo hinge", [{"name": "cpo", "loss_type": "hinge"}]),
    ("cpo ipo", [{"name": "cpo", "loss_type": "ipo"}]),
    ("orpo", [{"name": "orpo"}]),
    ("orpo (NLL token mean)", [{"name": "orpo", "nll_normalize": "tokens"}]),
    ("repo", [{"name": "repo"}]),
    ("asft", [{"name": "asft"}]),
    ("beta_dpo", [{"name": "beta_dpo"}]),
    ("margin_weighted_dpo (gold score gap)", [{"name": "margin_weighted_dpo"}]),
    ("wpo", [{"name": "wpo"}]),
    ("dpo + sft 0.2 (RPO)", [{"name": "dpo"}, {"name": "sft", "weight": 0.2}]),
    ("vpo (pessimistic, alpha 0.1)", [{"name": "vpo"}]),
    ("pcrm (length ratio)", [{"name": "pcrm"}]),
    ("sft (chosen answers only)", [{"name": "sft"}]),
    ("iw_sft (chosen answers only)", [{"name": "iw_sft"}]),
    ("poft (base as the aligned model)", [{"name": "poft"}]),
    ("listwise_dpo (lists of 2)", [{"name": "listwise_dpo"}]),
    ("pro (lists of 2)", [{"name": "pro"}]),
    ("rrhf (lists of 2)", [{"name": "rrhf"}]),
    ("kto (pairs split into labels)", [{"name": "kto"}]),
    ("apo_zero_unpaired (pairs split into labels)", [{"name": "apo_zero_unpaired"}]),
    ("tdpo2", [{"name": "tdpo"}]),
    ("tdpo1", [{"name": "tdpo", "variant": 1}]),
    ("sparsepo (learned mask)", [{"name": "sparsepo"}]),
    ("sparsepo (reference activation mask)", [{"name": "sparsepo", "mask": "reference"}]),
    ("modpo (gold 0.8, brevity 0.2)", [{"name": "modpo", "preference_weight": 0.8, "others": {"brevity": 0.2}}]),
]
# Losses that read another shape of the same data: (label, loss terms, data variant of prefalign.toy).
ZOO_OTHER_DATA: list[tuple[str, list[dict], str]] = [
    ("dove (joint + same-prompt pairs)", [{"name": "dove"}], "joint"),
    ("tpo (triples, ideal answer as gold)", [{"name": "tpo"}], "triples"),
    ("dft (triples: ideal answer against the 2 base samples)", [{"name": "dft"}], "triples"),
]
# Schedules run with plain DPO: (label, schedule settings, data variant).
SCHEDULES: list[tuple[str, dict, str]] = [
    ("dpo + TR-DPO soft (tau 32, alpha 0.6)", {"reference_update": "soft", "update_every": 32, "mix": 0.6}, "pairs"),
    ("dpo + TR-DPO hard (tau 64)", {"reference_update": "hard", "update_every": 64}, "pairs"),
    ("dpo + sDPO (2 chunks)", {"stages": "chunks", "num_chunks": 2}, "pairs"),
    # every pair of the 4 scored samples, easiest (largest gold gap) first, the reference reset per stage
    ("dpo + Curry-DPO (all pairs of 4 samples, by gap)", {"stages": "curriculum"}, "rated"),
]
CURRY = SCHEDULES[-1][0]


@dataclass
class ZooRow:
    label: str
    preference_accuracy: float
    gold_reward: float
    win_rate: float
    kl: float
    mean_length: float
    seconds: float
    error: str | None = None


def data_variant(pairs_file: Path, variant: str, seed: int) -> Path:
    """The toy pairs as they are, as joint records plus cross-prompt pairs (DOVE), as triples (TPO), or as
    rated data: every scored sample of each prompt (Curry-DPO)."""
    if variant == "pairs":
        return pairs_file
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    if variant == "joint":
        same_prompt = [{"chosen_prompt": r["prompt"], "chosen": r["chosen"], "rejected_prompt": r["prompt"],
                        "rejected": r["rejected"]} for r in rows]
        return write_jsonl(pairs_file.with_name("toy_joint.jsonl"), same_prompt + joint_rows(rows, seed))
    if variant == "triples":
        return write_jsonl(pairs_file.with_name("toy_triples.jsonl"), triple_rows(rows, seed))
    if variant == "rated":
        return write_jsonl(pairs_file.with_name("toy_rated.jsonl"), rated_rows(rows))
    raise ValueError(f"unknown data variant {variant!r}")


def wanted(label: str, only: list[str], labels: list[str]) -> bool:
    """`--only NAME` picks the row labelled exactly NAME if there is one, else every row whose label contains
    it (`--only hinge` is the hinge row, not also `cpo hinge`; `--only sparsepo` is both SparsePO rows)."""
    return any(label == o if o in labels else o in label for o in only)


def preference_accuracy(model: torch.nn.Module, base: torch.nn.Module, pairs: list, pad_id: int) -> float:
    objective = PairObjective(build_losses([LossTerm(name="dpo")]), FrozenCopyReference(base))
    return evaluate(model, objective, fixed_batches(pairs, 64, pad_id))["eval/rewards/accuracies"]


def run_zoo(out: Path, doc: Path | None, steps: int = 150, n_prompts: int = 1200, n_eval_prompts: int = 200,
            seed: int = 0, only: list[str] | None = None, console: Console | None = None) -> list[ZooRow]:
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    data = write_toy_pairs(out / "data", seed=seed, n_prompts=n_prompts)
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    base = load_pretrained_model(AutoModelForCausalLM, str(TOY_BASE))
    prompts = random.Random(seed).sample(split_prompts()[1], n_eval_prompts)
    baseline_reward = None
    # Preference accuracy is measured on held-out *pairs* whatever a loss consumes (pairs, lists, labels);
    # the split by source row is the same for every kind, so these pairs were held out of every run.
    held_out_pairs = prepare_data(quickstart_config(out, seed=seed).data.model_copy(update={"train": str(data)}),
                                  tokenizer, seed).eval
    rows = []
    runs = ([(label, terms, {}, "pairs") for label, terms in ZOO]
            + [(label, terms, {}, variant) for label, terms, variant in ZOO_OTHER_DATA]
            + [(label, [{"name": "dpo"}], sched, variant) for label, sched, variant in SCHEDULES])
    for n, (label, terms, schedule, variant) in enumerate(runs):
        if only and not wanted(label, only, [r[0] for r in runs]):
            continue
        console.rule(label)
        cfg = quickstart_config(out / f"{n:02d}", seed=seed, steps=steps)
        cfg.data.train = str(data_variant(data, variant, seed))
        if variant == "rated":
            cfg.data.pairs.rule = "all_pairs"
        cfg.loss = [LossTerm(**t) for t in terms]
        cfg.schedule = ScheduleConfig(**schedule)
        cfg.trainer.progress = False
        start = time.perf_counter()
        try:
            run = train_preference(cfg, console=Console(quiet=True), overwrite=True)
            policy = load_pretrained_model(AutoModelForCausalLM, str(run.outputs["model"]))
            acc = preference_accuracy(policy, base, held_out_pairs, tokenizer.pad_token_id)
            cmp = compare_policies(policy, base, tokenizer, prompts, gold_reward, seed=seed + 1)
            baseline_reward = cmp.baseline_reward
            row = ZooRow(label, acc, cmp.policy_reward, cmp.win_rate, cmp.kl, cmp.policy_length,
                         time.perf_counter() - start)
        except Exception as exc:  # a loss that fails is reported in the table, never hidden
            row = ZooRow(label, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"),
                         time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
        console.print(row)
        rows.append(row)
    # The figures behind the table sit next to it (docs/losses.json), so that a later partial rerun can keep them.
    saved = doc.with_suffix(".json") if doc is not None else out / "zoo.json"
    if only and saved.exists():
        # A partial rerun replaces its rows in the last full table and keeps the others.
        previous = json.loads(saved.read_text())
        merged = {r["label"]: ZooRow(**r) for r in previous["rows"]} | {r.label: r for r in rows}
        rows = [merged[label] for label, *_ in runs if label in merged]
        baseline_reward = previous["base_reward"] if baseline_reward is None else baseline_reward
    settings = {"steps": steps, "n_prompts": n_prompts, "n_eval": n_eval_prompts, "seed": seed}
    write_text_atomic(saved, json.dumps({"base_reward": baseline_reward, "settings": settings,
                                         "rows": [r.__dict__ for r in rows]}, indent=2))
    if doc is not None:
        write_text_atomic(doc, render_table(rows, baseline_reward, steps, n_prompts, n_eval_prompts, seed))
    return rows


def notes(rows: list[ZooRow]) -> str:
    """What to read into the table; every figure comes from `rows` (the run the table shows)."""
    r = {row.label: row for row in rows if not row.error}

    def kl(label: str) -> str:
        return f"KL {r[label].kl:.1f}" if label in r else "not run"

    lines = ["", "## Notes", "",
             "- Every loss runs with its defaults at one learning rate; a loss below DPO here is not worse in general, "
             "only at these settings (IPO and SPPO regress margins onto 1/(2 beta), so they move less from the base).",
             "- `apo_down` is meant for data whose chosen answers are *worse* than the model's own (it lowers both "
             f"likelihoods); here the chosen answers are the base's own best samples ({kl('apo_down')}, against DPO's "
             f"{kl('dpo')}).",
             "- `discopop` (beta 0.05, tau 0.05): with z = beta h, its loss has a local maximum at z = 0, where "
             "training starts (policy = reference), so gradient descent can slide to negative margins (preference "
             f"accuracy {r['discopop'].preference_accuracy:.3f} here)." if "discopop" in r else "",
             "- `aot (unpaired)` ignores which responses were paired, so it learns from less information than "
             "`aot (paired)`.",
             "- Ranking rows and KTO see the same pairs, as lists of two and as labelled completions.",
             "- KTO, beta-DPO, AOT, BCO and every NLL term with `nll_normalize: tokens` couple a step's examples, "
             "so each step runs one more forward pass without gradient first (training/coupled.py); it shows in "
             "their seconds.",
             "- One seed, one sample per held-out prompt: small differences between rows are within sampling noise.",
             "- `dove` trains on the same pairs written as joint records plus cross-prompt pairs (one prompt's chosen "
             "answer against another prompt's rejected one, kept where the gold reward agrees); `tpo` on the same "
             "pairs with the world's ideal answer added as gold. Their held-out pairs are those of the other rows, so "
             "a few of their prompts may have been seen in training.",
             f"- Token level: TDPO2 ({kl('tdpo2')}) stops the gradient through the chosen side's KL; TDPO1 "
             f"({kl('tdpo1')}) lets it widen the margin. SparsePO's reference-activation mask rescales each sequence "
             f"to [0, 1], which scales down both the reward and the KL terms ({kl('sparsepo (reference activation mask)')}); "
             "the learned mask has no L1 penalty by default, so sparsity needs `l1_reward`/`l1_kl`.",
             "- Curry-DPO trains on every pair of each prompt's scored samples (up to 6), in stages from the largest "
             "gold gap to the smallest, the reference reset at each stage; at the same 100 steps it reaches "
             f"{r[CURRY].gold_reward:.3f} gold reward against DPO's {r['dpo'].gold_reward:.3f} on best-vs-worst "
             "pairs." if CURRY in r and "dpo" in r else "",
             "- `modpo` adds the toy's second objective, brevity (-0.1 per word), with weight 0.2; "
             "`prefalign modpo-sweep` traces the whole gold/brevity front.",
             *new_loss_notes(r)]
    return "\n".join(line for line in lines if line is not None) + "\n"


def new_loss_notes(r: dict[str, ZooRow]) -> list[str]:
    """Notes on the TRL options and the SFT-family rows; each only when its rows ran."""

    def gold(label: str) -> str:
        return f"{r[label].gold_reward:.3f}"

    lines = []
    if {"orpo", "orpo (NLL token mean)"} <= r.keys():
        lines.append(f"- `orpo (NLL token mean)` takes the NLL over the step's tokens, so long chosen answers weigh "
                     f"more: mean length {r['orpo (NLL token mean)'].mean_length:.1f} against "
                     f"{r['orpo'].mean_length:.1f}, gold {gold('orpo (NLL token mean)')} against {gold('orpo')}.")
    if {"kto (pairs split into labels)", "apo_zero_unpaired (pairs split into labels)"} <= r.keys():
        lines.append("- `apo_zero_unpaired` anchors each labelled completion to the reference on its own, without "
                     "KTO's KL rows (one forward pass per completion instead of two): gold "
                     f"{gold('apo_zero_unpaired (pairs split into labels)')} against KTO's "
                     f"{gold('kto (pairs split into labels)')}.")
    sft_rows = ["sft (chosen answers only)", "iw_sft (chosen answers only)", "poft (base as the aligned model)"]
    if set(sft_rows) <= r.keys():
        lines.append(f"- The SFT family learns from the chosen answers alone: sft {gold(sft_rows[0])}, iw_sft "
                     f"{gold(sft_rows[1])}, poft {gold(sft_rows[2])}. PoFT's aligned model is the base itself "
                     "here (the toy has no other), so its weights s(b (s_ref - s_theta)) start at 1/2 and shrink as "
                     "the policy passes the base: a decaying SFT step, not the paper's setting.")
    dft_row = "dft (triples: ideal answer against the 2 base samples)"
    if dft_row in r:
        lines.append(f"- `dft` reads the triples as the ideal answer against the pair's two base samples as negatives "
                     f"(their base log-probs as importance weights), with no preference label: gold {gold(dft_row)}, "
                     f"KL {r[dft_row].kl:.1f}.")
    return lines


def render_table(rows: list[ZooRow], base_reward: float | None, steps: int, n_prompts: int, n_eval: int, seed: int) -> str:
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [
        "# The loss zoo on the toy task",
        "",
        "Generated by `prefalign zoo --doc docs/losses.md` (prefalign/evaluation/zoo.py); do not edit by hand.",
        f"Machine: {machine}. Date: {time.strftime('%Y-%m-%d')}.",
        f"Same data for every loss: best-vs-worst of 4 base samples on {n_prompts} training prompts; {steps} steps of",
        f"16 pairs, lr 2e-4, cosine, seed {seed}; each loss with its default parameters (see `prefalign losses`).",
        f"Evaluation: {n_eval} held-out prompts, one sample each at temperature 1; the base scores "
        f"{base_reward:.3f} mean gold reward there." if base_reward is not None else "",
        "Preference accuracy: held-out pairs whose chosen response gets the higher implicit reward log pi/pi_base.",
        "",
        "| loss | pref. accuracy | gold reward | win rate vs base | KL to base | length | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.label} | failed: {r.error} | | | | | {r.seconds:.0f} |")
        else:
            lines.append(f"| {r.label} | {r.preference_accuracy:.3f} | {r.gold_reward:.3f} | {r.win_rate:.3f} | "
                         f"{r.kl:.2f} | {r.mean_length:.1f} | {r.seconds:.0f} |")
    return "\n".join(lines) + "\n" + notes(rows)


def render_from_json(path: Path, doc: Path, settings: dict | None = None) -> None:
    """Rewrite `doc` from the figures a run saved next to its table (for a change to the rendering, not to the runs)."""
    saved = json.loads(Path(path).read_text())
    given = saved.get("settings") or settings
    if given is None:
        raise ValueError(f"{path} does not record its settings (steps, n_prompts, n_eval, seed); pass them")
    rows = [ZooRow(**r) for r in saved["rows"]]
    write_text_atomic(doc, render_table(rows, saved["base_reward"], given["steps"], given["n_prompts"], given["n_eval"],
                                        given["seed"]))
