"""Online preference optimisation (Guo et al. 2024, "Direct Language Model Alignment from Online AI
Feedback"): the policy samples k completions per prompt, a scorer labels them, and any pairwise loss of the
registry learns from the best-vs-worst (or all) pairs, round after round. The same loop, engine, reference
kinds, processes and exact resume as `prefalign train`; the batch source is the rollout source."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rich.console import Console

from prefalign.config.schema import OnlineTrainConfig
from prefalign.data.collate import collate_pairs
from prefalign.data.prompts import read_prompts
from prefalign.losses.registry import build_losses, loss_kind
from prefalign.models.engine import precision_context
from prefalign.models.loading import disable_dropout, load_policy, load_tokenizer
from prefalign.models.reference import FrozenCopyReference
from prefalign.online.rollouts import RolloutLog, RolloutSource, rollout_draft
from prefalign.online.scorers import build_scorer
from prefalign.online.selection import implicit_margin_fn
from prefalign.toy.world import parse_prompt, split_prompts
from prefalign.training.loop import LoopData, LoopResult
from prefalign.training.objectives import PairObjective
from prefalign.training.preference import build_reference, build_schedule, start_run, train_and_export


@dataclass
class OnlineRun:
    run_dir: Path
    loop: LoopResult
    outputs: dict[str, Path]
    main: bool = True


def online_prompts(source: str, seed: int) -> list[str]:
    """The prompts a run cycles through, shuffled once by the seed. The toy's are its training prompts."""
    if source in ("toy", "toy-arithmetic"):
        prompts = split_prompts()[0]
        if source == "toy-arithmetic":
            prompts = [p for p in prompts if parse_prompt(p).kind == "arithmetic"]
    else:
        prompts = read_prompts(source)
    prompts = list(prompts)
    random.Random(seed).shuffle(prompts)
    return prompts


def train_online(cfg: OnlineTrainConfig, resume: bool = False, console: Console | None = None,
                 on_step: Callable[[int, dict], None] | None = None, overwrite: bool = False) -> OnlineRun:
    losses = build_losses(cfg.loss)
    if loss_kind(losses) != "pairwise":
        raise ValueError("prefalign online builds pairs; use pairwise losses (dpo, ipo, hinge, ...)")
    if cfg.schedule.stages != "none":
        raise ValueError("schedule.stages orders a fixed dataset; online rounds have none (use schedule.reference_update)")
    if cfg.reference.kind == "precomputed":
        raise ValueError("reference.kind=precomputed needs a fixed dataset; online samples are new each round "
                         "(use copy or adapter)")
    cfg, processes, console = start_run(cfg, console, resume, overwrite)
    run_dir = Path(cfg.trainer.output_dir)
    tokenizer = load_tokenizer(cfg.model)
    policy = load_policy(cfg.model).to(processes.device)
    disable_dropout(policy)
    with precision_context(cfg.engine, policy):
        reference = build_reference(cfg, policy, losses, list, [], processes, console)
    if isinstance(reference, FrozenCopyReference):
        disable_dropout(reference.model)
    prompts = online_prompts(cfg.online.prompts, cfg.trainer.seed)
    collate = partial(collate_pairs, pad_id=tokenizer.pad_token_id, packed=cfg.engine.packed,
                      capacity=cfg.engine.pack_tokens)
    log = RolloutLog(run_dir / "rollouts.jsonl") if processes.is_main else None
    if log is not None and not resume and log.path.exists():
        log.path.unlink()
    implicit = None
    if cfg.online.select != "none":
        if reference is None:
            raise ValueError(f"online.select={cfg.online.select} scores pairs by the policy's margin against a "
                             "reference; the loss has none (use dpo, ipo, ...)")
        implicit = implicit_margin_fn(policy, reference, collate, losses[0].beta or 0.1, processes.device)
    source = RolloutSource(policy, tokenizer, prompts, build_scorer(cfg.online.scorer, cfg.online.noise), cfg.online,
                           cfg.trainer, collate, processes.rank, processes.world, log,
                           rollout_draft(cfg.online, cfg.model, tokenizer, processes.device), implicit)
    console.print(f"online: {len(prompts)} prompts, {cfg.online.samples} samples each, scorer {cfg.online.scorer}, "
                  f"{cfg.trainer.batch_size * cfg.trainer.grad_accum} pairs a step, a round every "
                  f"{cfg.online.generate_every} steps", soft_wrap=True)
    # Iterative DPO: schedule.reference_update=hard every generate_every steps makes each round's reference the
    # policy that sampled it; the hook checkpoints the reference, so resume stays exact.
    _, hooks = build_schedule(cfg, [], reference, "pairwise", processes.strategy)
    objective = PairObjective(losses, reference, cfg.engine.logp_chunk)
    result, outputs = train_and_export(policy, tokenizer, objective, LoopData(source, hooks=hooks), cfg, processes,
                                       resume, console, on_step)
    return OnlineRun(run_dir, result, outputs, processes.is_main)
