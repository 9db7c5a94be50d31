"""`prefalign data active`: active preference learning (Muldrew et al. 2024). A pool of unlabelled pairs (two
completions per prompt); each round the current policy scores what is left (`active` selector: predictive
entropy, then the implicit preference model's certainty), a labeller is asked about the acquired pairs only,
and DPO trains again from the start model on every label bought so far. The first round has no trained
policy to ask (its implicit model is certain of nothing), so it acquires at random.

Writes into `out`: `round-K/` (each round's run folder), `labelled.jsonl` (every bought label, as pairs) and
`active.json` (per round: pairs asked, ties, the acquisition scores of what was kept against the pool's)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import TrainConfig
from prefalign.data.loading import read_pairs
from prefalign.data.readers import read_records
from prefalign.selection.labellers import Labeller, oriented
from prefalign.selection.scores import pair_scores
from prefalign.selection.selectors import SELECTORS, Selection
from prefalign.toy.preference_data import write_jsonl


def acquire(candidates: Path, policy: str | None, cfg: TrainConfig, per_round: int, seed: int,
            oversample: float) -> Selection:
    """The pairs to ask about: at random without a trained policy, else by the `active` selector."""
    pairs = read_pairs(str(candidates))
    if policy is None:
        return SELECTORS["random"].fn(pair_scores(str(candidates), pairs, (), "random"), per_round, seed)
    scores = pair_scores(str(candidates), pairs, SELECTORS["active"].needs, "active", policy=policy,
                         reference=cfg.model.name_or_path, beta=implicit_beta(cfg), max_length=cfg.data.max_length)
    return SELECTORS["active"].fn(scores, per_round, seed, oversample=oversample)


def implicit_beta(cfg: TrainConfig) -> float:
    """The beta of the implicit reward b (log pi - log pi_ref): the first loss term's (the registry's view of
    it), 0.1 where it has none."""
    from prefalign.losses.registry import build_losses

    return build_losses(cfg.loss)[0].beta or 0.1 if cfg.loss else 0.1


def _summary(selection: Selection, name: str) -> dict:
    column = selection.columns.get(name)
    if column is None:
        return {}
    return {f"{name}_kept": float(column[selection.kept].mean()), f"{name}_pool": float(column.mean())}


def train_round(cfg: TrainConfig, labelled: Path, run_dir: Path, console: Console) -> str:
    from prefalign.training.preference import train_preference

    data = cfg.data.model_copy(update={"train": str(labelled)})
    trainer = cfg.trainer.model_copy(update={"output_dir": str(run_dir)})
    run = train_preference(cfg.model_copy(update={"data": data, "trainer": trainer}), console=console,
                           overwrite=True)
    return str(run.outputs["model"])


def active_learning(pool: str, cfg: TrainConfig, out: Path, labeller: Labeller, rounds: int, per_round: int,
                    seed: int = 0, oversample: float = 2.0, console: Console | None = None,
                    on_round: Callable[[int, str], None] | None = None) -> dict:
    """Run the loop; return (and write) the report. `on_round(k, policy_folder)` sees each round's policy."""
    console = console or Console()
    if rounds < 1 or per_round < 1:
        raise ValueError("data active: --rounds and --per-round must be at least 1")
    remaining = [dict(r.fields) for r in read_records(pool)]
    if rounds * per_round > len(remaining):
        raise ValueError(f"data active: {rounds} rounds of {per_round} ask for {rounds * per_round} pairs; "
                         f"{pool} holds {len(remaining)}")
    out.mkdir(parents=True, exist_ok=True)
    labelled, report, policy = [], {"pool": pool, "rounds": []}, None
    for k in range(rounds):
        candidates = write_jsonl(out / f"round-{k}" / "candidates.jsonl", remaining)
        selection = acquire(candidates, policy, cfg, per_round, seed + k, oversample)
        asked = [remaining[i] for i in selection.kept.tolist()]
        bought, ties = oriented(asked, labeller(asked))
        labelled += bought
        taken = set(selection.kept.tolist())
        remaining = [r for i, r in enumerate(remaining) if i not in taken]
        path = write_jsonl(out / "labelled.jsonl", labelled)
        console.print(f"round {k}: asked {len(asked)} ({ties} ties), {len(labelled)} labelled; training",
                      markup=False)
        policy = train_round(cfg, path, out / f"round-{k}", console)
        report["rounds"].append({"round": k, "asked": len(asked), "ties": ties, "labelled": len(labelled),
                                 "acquisition": "random" if k == 0 else "active", "policy": policy,
                                 **_summary(selection, "entropy"), **_summary(selection, "certainty")})
        if on_round is not None:
            on_round(k, policy)
    report["policy"] = policy
    write_text_atomic(out / "active.json", json.dumps(report, indent=1))
    return report
