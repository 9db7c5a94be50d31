"""The preference-optimisation recipe: config -> data, policy, reference, losses -> training loop -> outputs.

The losses' kind decides the data layout: pairs (DPO and kin), ranked lists (PRO, RRHF, listwise DPO) or
labelled completions (KTO). Any preference format converts to what the losses consume where it can: pairs
become lists of two or two labelled completions; rated completions become pairs by a rule, or ranked lists."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import DataConfig, TrainConfig
from prefalign.data.collate import (
    collate_lists,
    collate_pairs,
    collate_unpaired,
    fixed_batches,
    mismatch_partners,
)
from prefalign.data.errors import BadRowTally, DataError
from prefalign.data.loading import load_examples, to_lists, to_pairs, to_unpaired
from prefalign.data.tokenize import CompletionTokenizer, TokenizedPair, tokenize_list, tokenize_unpaired
from prefalign.losses.registry import (
    NEEDS,
    TOKEN_LEVEL_NEEDS,
    TOKEN_LEVEL_REFERENCE_NEEDS,
    BoundLoss,
    build_losses,
    combined_needs,
    loss_kind,
)
from prefalign.merging.merge import MergeRecipe, merge_modules
from prefalign.models.engine import compile_decoder, precision_context, precision_tag
from prefalign.models.loading import frozen_model, load_causal_lm, load_policy, load_tokenizer
from prefalign.models.logprobs import supports_chunked_head
from prefalign.models.reference import (
    DisabledAdapterReference,
    FrozenCopyReference,
    PrecomputedReference,
    Reference,
)
from prefalign.models.reference_cache import (
    cache_key,
    default_cache_dir,
    load_cached,
    model_fingerprint,
    save_cached,
)
from prefalign.training.data_order import stage_end_steps, staged_plan, steps_per_epoch
from prefalign.training.distributed import Processes, start_processes
from prefalign.training.export import export_run
from prefalign.training.loop import LoopData, LoopResult, train_loop
from prefalign.training.machine import use_threads
from prefalign.training.objectives import OBJECTIVES
from prefalign.training.run_folder import claim_run_folder
from prefalign.training.schedules import ReferenceUpdates, chunk_stages, column_stages, curriculum_stages

COLLATE = {"pairwise": collate_pairs, "ranking": collate_lists, "unpaired": collate_unpaired}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- data ---------------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    train: list
    eval: list
    tally: BadRowTally
    format: str
    boundary_fallbacks: int
    truncated: int
    format_note: str = ""  # how the format was detected (empty when data.format was given)


def tokenize_all(items: list, tokenize: Callable, cfg: DataConfig, tally: BadRowTally) -> list:
    out = []
    for item in items:
        try:
            out.append(tokenize(item))
        except DataError as err:
            if cfg.on_bad_row == "error":
                raise
            tally.add(err)
    return out


def split_by_row(items: list, fraction: float, seed: int) -> tuple[list, list]:
    """Hold out a fraction of source rows; all examples built from one row stay on the same side."""
    rows = sorted({p.ref.row for p in items})
    if fraction <= 0 or len(rows) < 2:
        return items, []
    random.Random(seed).shuffle(rows)
    held = set(rows[: max(1, round(fraction * len(rows)))])
    return [p for p in items if p.ref.row not in held], [p for p in items if p.ref.row in held]


def prepare_data(cfg: DataConfig, tokenizer: object, seed: int, kind: str = "pairwise") -> PreparedData:
    convert = {"pairwise": lambda ld: to_pairs(ld, cfg, seed), "ranking": lambda ld: to_lists(ld, cfg),
               "unpaired": lambda ld: to_unpaired(ld, cfg, seed)}[kind]
    loaded = load_examples(cfg.train, cfg)
    items = convert(loaded)
    if cfg.eval:
        eval_items = convert(load_examples(cfg.eval, cfg))
    else:
        items, eval_items = split_by_row(items, cfg.eval_fraction, seed)
    tok = CompletionTokenizer(tokenizer, cfg.max_length, cfg.max_prompt_length, cfg.too_long)
    tokenize = {"pairwise": tok.pair,
                "ranking": lambda e: tokenize_list(tok, e.prompt, e.responses, e.ref),
                "unpaired": lambda e: tokenize_unpaired(tok, e.prompt, e.completion, e.label, e.ref)}[kind]
    train = tokenize_all(items, tokenize, cfg, loaded.tally)
    held = tokenize_all(eval_items, tokenize, cfg, loaded.tally)
    if not train:
        raise DataError(cfg.train, None, "no training examples left after validation", "empty")
    return PreparedData(train, held, loaded.tally, loaded.format, tok.boundary_fallbacks, tok.truncated,
                        loaded.format_note)


def check_columns(losses: list[BoundLoss], pairs: list[TokenizedPair]) -> None:
    """A loss that reads a data column fails before training when a pair lacks it."""
    for term in losses:
        for column in term.columns:
            missing = next((p for p in pairs if column not in p.extras), None)
            if missing is not None:
                raise DataError(missing.ref, column, f"loss {term.spec.name!r} needs this numeric column", "missing_column")


# -- reference ----------------------------------------------------------------------------------------------


def build_reference(cfg: TrainConfig, policy: torch.nn.Module, losses: list[BoundLoss],
                    all_batches: Callable[[], list], examples: list, processes: Processes,
                    console: Console | None = None, needed_by: str | None = None) -> Reference | None:
    """The reference, on the policy's device and sharded like it. A precomputed table is computed by every
    process (a sharded reference needs them all in each forward pass) and cached by rank 0. `needed_by`:
    what other than the losses asks for a reference (RL's KL term)."""
    names = [t.spec.name for t in losses if t.spec.needs_reference] + ([needed_by] if needed_by else [])
    if not names:
        return None
    kind = cfg.reference.kind
    if kind == "auto":
        kind = "adapter" if cfg.model.adapter and not cfg.reference.soup else "copy"
    if kind == "none":
        raise ValueError(f"reference.kind=none, but {', '.join(names)} need reference log-probs")
    if kind == "adapter":
        if cfg.reference.name_or_path:
            raise ValueError("reference.kind=adapter uses the policy's own base; drop reference.name_or_path")
        return DisabledAdapterReference(policy)
    token_level = combined_needs(losses) & TOKEN_LEVEL_REFERENCE_NEEDS
    if kind == "precomputed" and token_level:
        wanted = ", ".join(NEEDS[n] for n in sorted(token_level))
        raise ValueError(f"reference.kind=precomputed stores per-sequence log-probs, but a loss needs {wanted}; "
                         "use reference.kind=copy or adapter")
    if kind == "precomputed" and loss_kind(losses) != "pairwise":
        raise ValueError("reference.kind=precomputed supports pairwise losses; use copy or adapter")
    key = cache_dir = None
    if kind == "precomputed" and cfg.reference.cache:
        cache_dir = Path(cfg.reference.cache_dir) if cfg.reference.cache_dir else default_cache_dir()
        tag = precision_tag(cfg.engine, cfg.model.dtype)
        fingerprint = ({"soup": [model_fingerprint(p, tag) for p in cfg.reference.soup],
                        "weights": cfg.reference.soup_weights} if cfg.reference.soup else
                       model_fingerprint(cfg.reference.name_or_path or cfg.model.name_or_path, tag))
        key = cache_key(fingerprint, examples)
        cached = load_cached(cache_dir, key)
        if cached is not None:
            if console:
                console.print(f"reference: log-probs from the cache ({cache_dir / key}.safetensors)")
            return cached
    frozen = frozen_reference(cfg, policy)
    processes.place(frozen.model)
    if kind == "copy":
        return frozen
    device = processes.device
    table = PrecomputedReference.compute(frozen, (b.to(device) for b in all_batches()), len(examples))
    if key is not None and processes.is_main:
        save_cached(cache_dir, key, table)
    return table


def frozen_reference(cfg: TrainConfig, policy: torch.nn.Module) -> FrozenCopyReference:
    """The reference as a model of its own: the soup's weight average (SALSA), the named model, the base
    under an adapter (loaded afresh), or a copy of the policy as it starts."""
    ref = cfg.reference
    if ref.soup:
        models = [frozen_model(cfg.model, path) for path in ref.soup]
        return FrozenCopyReference(merge_modules(models, MergeRecipe("linear", ref.soup_weights), labels=ref.soup))
    if ref.name_or_path or cfg.model.adapter:
        return FrozenCopyReference(load_causal_lm(cfg.model, ref.name_or_path))
    return FrozenCopyReference.copy_of(policy)


# -- the recipe ---------------------------------------------------------------------------------------------


@dataclass
class PreferenceRun:
    run_dir: Path
    loop: LoopResult
    outputs: dict[str, Path]
    data: PreparedData
    main: bool = True  # rank 0 of a multi-process run, or the only process


def report_machine(threads: int | None, processes: Processes, console: Console | None) -> None:
    """The run's first line: its processes, device, threads and the machine's load; a warning when busy."""
    machine = use_threads(threads)
    if console is None:
        return
    console.print(f"processes: {processes.world} ({processes.strategy}) on {processes.device.type}; {machine.line()}",
                  markup=False, highlight=False)
    warning = machine.warning()
    if warning:
        console.print(warning, style="yellow", markup=False, highlight=False)


def report_resume(resume: bool, changed: list[str], console: Console | None) -> None:
    if resume and console is not None:
        what = "; ".join(changed) if changed else "none"
        console.print(f"resume: settings changed since the run started: {what}", markup=False, highlight=False)


def start_run(cfg: TrainConfig, console: Console | None, resume: bool = False,
              overwrite: bool = False) -> tuple[TrainConfig, Processes, Console]:
    """This process's place in the run (its world size recorded in the config), the run folder claimed for
    this run (training/run_folder.py), a console that only rank 0 prints to, and the seeds set."""
    processes = start_processes(cfg.distributed, cfg.engine.autocast)
    changed = claim_run_folder(Path(cfg.trainer.output_dir), cfg.model_dump(mode="json"), resume, overwrite, processes)
    cfg = cfg.model_copy(update={"distributed": cfg.distributed.model_copy(update={"world_size": processes.world})})
    console = (console or Console()) if processes.is_main else Console(quiet=True)
    report_machine(cfg.engine.threads, processes, console)
    report_resume(resume, changed, console)
    seed_everything(cfg.trainer.seed)
    return cfg, processes, console


def train_and_export(policy: torch.nn.Module, tokenizer: object, objective: object, loop_data: LoopData,
                     cfg: TrainConfig, processes: Processes, resume: bool, console: Console,
                     on_step: Callable[[int, dict], None] | None,
                     build: Callable[[], torch.nn.Module] | None = None) -> tuple[LoopResult, dict[str, Path]]:
    """config.yaml, the loop, then model/ (and adapter/) written by rank 0 from the whole model (under FSDP2
    gathered into a fresh one from `build`, by default the configured policy)."""
    run_dir = Path(cfg.trainer.output_dir)
    resolved = cfg.model_dump(mode="json")
    if processes.is_main:
        # Written now as well as at export, so that checkpoints of an unfinished run can be loaded for evaluation.
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    with precision_context(cfg.engine, policy):
        result = train_loop(policy, objective, loop_data, cfg.trainer, run_dir, resume=resume, on_step=on_step,
                            console=console, config_for_sinks=resolved, processes=processes)
    whole = processes.consolidated(policy, build or (lambda: load_policy(cfg.model)))
    outputs = export_run(whole, tokenizer, run_dir, resolved) if whole is not None and processes.is_main else {}
    processes.barrier()
    return result, outputs


def train_preference(cfg: TrainConfig, resume: bool = False, console: Console | None = None,
                     on_step: Callable[[int, dict], None] | None = None, overwrite: bool = False) -> PreferenceRun:
    cfg, processes, console = start_run(cfg, console, resume, overwrite)
    run_dir = Path(cfg.trainer.output_dir)
    if cfg.data.train == "toy":
        from prefalign.toy.preference_data import cached_toy_pairs

        toy_file = run_dir / "data" / "toy_pairs.jsonl"
        if processes.is_main:  # the others wait, then read the same file
            cached_toy_pairs(run_dir / "data", seed=cfg.trainer.seed, say=lambda s: console.print(s, markup=False))
        processes.barrier()
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"train": str(toy_file)})})
    losses = build_losses(cfg.loss)
    kind = loss_kind(losses)
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg.data, tokenizer, cfg.trainer.seed, kind)
    for line in data.tally.summary_lines():
        console.print(f"data: {line}", markup=False)
    if data.format_note:
        console.print(f"data: format detected: {data.format_note}", markup=False, soft_wrap=True)
    console.print(f"data: format {data.format} read as {kind} examples: {len(data.train)} for training, "
                  f"{len(data.eval)} held out; {data.truncated} truncated to {cfg.data.max_length} tokens")
    if kind == "pairwise":
        check_columns(losses, data.train + data.eval)
    policy = load_policy(cfg.model).to(processes.device)
    pad = tokenizer.pad_token_id
    everything = data.train + data.eval
    size = cfg.trainer.eval_batch_size
    # Token-level outputs come from the chunked head; models that post-process logits keep the padded layout.
    packed = cfg.engine.packed and (supports_chunked_head(policy) or not combined_needs(losses) & TOKEN_LEVEL_NEEDS)
    collate = partial(COLLATE[kind], packed=packed, capacity=cfg.engine.pack_tokens)
    if kind == "unpaired":  # KTO's mismatched completions, paired by dataset index (split-independent)
        partners = mismatch_partners([len(data.train), len(data.eval)], cfg.trainer.seed)
        collate = partial(collate, pool=everything, partners=partners,
                          mismatched="kl_baseline" in combined_needs(losses))
    with precision_context(cfg.engine, policy):
        reference = build_reference(cfg, policy, losses, lambda: fixed_batches(everything, size, pad, collate=collate),
                                    everything, processes, console)
    if cfg.engine.compile:
        compile_decoder(policy)
        if isinstance(reference, FrozenCopyReference):
            compile_decoder(reference.model)
    # Held-out examples are indexed after the training ones, as in the precomputed reference table.
    eval_batches = fixed_batches(data.eval, size, pad, first_index=len(data.train), collate=collate)
    plan, hooks = build_schedule(cfg, data.train, reference, kind, processes.strategy)
    loop_data = LoopData(data.train, partial(_collate_with_pad, collate, pad), eval_batches, plan, hooks)
    objective = OBJECTIVES[kind](losses, reference, cfg.engine.logp_chunk)
    result, outputs = train_and_export(policy, tokenizer, objective, loop_data, cfg, processes, resume, console,
                                       on_step)
    return PreferenceRun(run_dir, result, outputs, data, processes.is_main)


def build_schedule(cfg: TrainConfig, train: list, reference: Reference | None, kind: str,
                   strategy: str = "single") -> tuple:
    """The data plan (None: shuffle everything) and the reference-update hooks (None: a fixed reference)."""
    sched, t = cfg.schedule, cfg.trainer
    stages = None
    if sched.stages == "chunks":
        stages = chunk_stages(len(train), sched.num_chunks, t.seed)
    elif sched.stages == "curriculum":
        if kind != "pairwise":
            raise ValueError("schedule.stages=curriculum orders pairs; it needs pairwise losses")
        stages = curriculum_stages(train)
    elif sched.stages == "by_column":
        stages = column_stages(train, sched.stage_column, sched.num_chunks)
    plan = staged_plan(stages, t.batch_size, t.grad_accum, t.seed) if stages else None
    updates = sched.reference_update != "none" or (stages is not None and sched.reset_reference_per_stage)
    if not updates:
        return plan, None
    if not isinstance(reference, FrozenCopyReference) or cfg.model.adapter:
        raise ValueError("schedules that update the reference need reference.kind=copy on a full (non-LoRA) model")
    if strategy == "fsdp2":
        raise ValueError("schedules that update the reference run in one process or with DDP; "
                         "distributed.strategy=fsdp2 does not checkpoint a sharded reference yet")
    ends = stage_end_steps(stages, t.batch_size, t.grad_accum) if stages else []
    per_epoch = ends[-1] if ends else steps_per_epoch(len(train), t.batch_size, t.grad_accum)
    return plan, ReferenceUpdates(reference, sched, ends, per_epoch)


def _collate_with_pad(collate: Callable, pad: int, items: list, index: list[int]) -> object:
    return collate(items, index, pad)
