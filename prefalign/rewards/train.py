"""The reward-model recipe: config -> pairs -> reward model -> the shared training loop -> saved folder and a
held-out evaluation. `prefalign rm train` runs it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from rich.console import Console

from prefalign.atomic_files import write_text_atomic
from prefalign.config.schema import EngineConfig, RewardConfig, RewardTrainConfig
from prefalign.data.collate import PairBatch, collate_pairs, fixed_batches
from prefalign.data.errors import BadRowTally, DataError
from prefalign.data.examples import PreferencePair
from prefalign.data.loading import load_examples, to_pairs
from prefalign.data.tokenize import TokenizedPair
from prefalign.losses.pcrm import bounded_ranking_loss, margin_bound
from prefalign.models.engine import precision_context
from prefalign.models.loading import (
    DTYPES,
    add_lora,
    disable_dropout,
    enable_checkpointing,
    load_tokenizer,
    resolve_path,
)
from prefalign.models.logprobs import unwrap
from prefalign.rewards.gpm import embed, preference_score
from prefalign.rewards.inputs import RewardTokenizer, with_extras
from prefalign.rewards.losses import bradley_terry, gpm_loss, multi_objective_bradley_terry
from prefalign.rewards.metrics import expected_calibration_error, pair_accuracy
from prefalign.rewards.model import RewardModel, RewardSpec, backbone_kind, build_reward_model
from prefalign.training.distributed import start_processes
from prefalign.training.loop import LoopData, LoopResult, Objective, train_loop
from prefalign.training.preference import (
    report_machine,
    report_resume,
    seed_everything,
    split_by_row,
    tokenize_all,
)
from prefalign.training.run_folder import claim_run_folder

USER_INDEX = "__user_index"
LENGTH_RATIO = "__length_ratio"  # PCRM's prior: min / max of the two responses' token counts


def pair_margins(model: RewardModel, batch: PairBatch, weights: torch.Tensor | None = None,
                 outputs: torch.Tensor | None = None) -> torch.Tensor:
    """Per pair, how strongly the model prefers the chosen response: r_w - r_l for scalar heads (several
    objectives combined by `weights`, default their mean), s(y_w > y_l) for gpm, r_u(y_w) - r_u(y_l) for pal."""
    out = model(batch.tokens) if outputs is None else outputs
    chosen, rejected = out[:batch.num_pairs], out[batch.num_pairs:]
    if model.spec.head == "gpm":
        return preference_score(embed(chosen), embed(rejected), model.scales())
    if model.spec.head == "pal":
        user = batch.extras[USER_INDEX].long()
        return model.ideal_points.reward(chosen, user) - model.ideal_points.reward(rejected, user)
    weights = torch.full((chosen.shape[1],), 1.0 / chosen.shape[1]) if weights is None else weights
    return (chosen - rejected) @ weights.to(chosen)


class RewardObjective(Objective):
    """The loop's objective: the summed per-pair loss, and per-pair accuracy and margin."""

    def __init__(self, spec: RewardSpec, reward: RewardConfig) -> None:
        self.spec, self.margin_column, self.center = spec, reward.margin_column, reward.center
        self.objective_columns, self.prior = reward.objectives, reward.prior_constraint

    def units(self, batch: PairBatch) -> int:
        return batch.num_pairs

    def num_tokens(self, batch: PairBatch) -> int:
        return batch.tokens.num_tokens

    def loss(self, model: RewardModel, batch: PairBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(batch.tokens)  # through a DDP wrapper's forward; its other parts from the module inside
        inner = unwrap(model)
        chosen, rejected = out[:batch.num_pairs], out[batch.num_pairs:]
        if self.spec.head == "gpm":
            loss = gpm_loss(embed(chosen), embed(rejected), inner.scales())
        elif self.spec.head == "pal":
            loss = -F.logsigmoid(pair_margins(inner, batch, outputs=out))
        elif self.objective_columns:
            labels = torch.stack([batch.extras[k] for k in self.objective_columns], dim=1).to(chosen)
            loss = multi_objective_bradley_terry(chosen, rejected, labels, self.center)
        elif self.prior:
            loss = self.prior_constrained(chosen[:, 0] - rejected[:, 0], batch)
        else:
            margin = batch.extras[self.margin_column].to(chosen) if self.margin_column else None
            loss = bradley_terry(chosen[:, 0], rejected[:, 0], margin, self.center)
        margins = pair_margins(inner, batch, outputs=out.detach())
        return loss.sum(), {"accuracy": (margins > 0).float() + 0.5 * (margins == 0).float(), "margin": margins}

    def prior_constrained(self, margin: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        """PCRM: the margin ranked and held under the bound its pair's similarity sets."""
        p = self.prior
        sim = batch.extras[LENGTH_RATIO if p.similarity == "length_ratio" else p.column].to(margin)
        return bounded_ranking_loss(margin, margin_bound(sim, p.beta1, p.beta2, p.beta3))


# -- data ---------------------------------------------------------------------------------------------------

def _require(pair: PreferencePair, column: str, numeric: bool = True) -> None:
    present = column in pair.extras if numeric else column in pair.tags
    if not present:
        kind = "a numeric" if numeric else "a string or integer"
        raise DataError(pair.ref, column, f"missing; the reward model's config reads {kind} column {column!r}",
                        "missing_column")


def reward_pairs(cfg: RewardTrainConfig, tok: RewardTokenizer) -> tuple[list[TokenizedPair], list[TokenizedPair], list[str], BadRowTally]:
    """(train, held-out, users, the rows skipped and why): tokenized pairs carrying the columns the head
    reads. With data.on_bad_row: skip, a row that fails (a missing column, too long under too_long: reject)
    is counted and left out, as in `prefalign train`."""
    loaded = load_examples(cfg.data.train, cfg.data)
    pairs = to_pairs(loaded, cfg.data, cfg.trainer.seed)
    if cfg.data.eval:
        held = to_pairs(load_examples(cfg.data.eval, cfg.data), cfg.data, cfg.trainer.seed)
    else:
        pairs, held = split_by_row(pairs, cfg.data.eval_fraction, cfg.trainer.seed)
    r = cfg.reward
    numeric = ([r.margin_column] if r.margin_column else []) + (r.objectives or [])
    if r.prior_constraint and r.prior_constraint.similarity == "column":
        numeric.append(r.prior_constraint.column)
    users = sorted({p.tags.get(r.user_column, "") for p in pairs}) if r.head == "pal" else []

    def tokenize(pair: PreferencePair) -> TokenizedPair:
        for column in numeric:
            _require(pair, column)
        tokenized = tok.pair(pair)
        if r.head == "pal":
            _require(pair, r.user_column, numeric=False)
            user = pair.tags[r.user_column]
            if user not in users:
                raise DataError(pair.ref, r.user_column, f"user {user!r} does not occur in the training data; "
                                "adapt to new users with rewards.pal.adapt_new_user", "unknown_user")
            tokenized = with_extras(tokenized, **{USER_INDEX: float(users.index(user))})
        if r.prior_constraint and r.prior_constraint.similarity == "length_ratio":
            n_w, n_l = len(tokenized.chosen_ids), len(tokenized.rejected_ids)
            tokenized = with_extras(tokenized, **{LENGTH_RATIO: min(n_w, n_l) / max(n_w, n_l, 1)})
        return tokenized

    train = tokenize_all(pairs, tokenize, cfg.data, loaded.tally)
    held_out = tokenize_all(held, tokenize, cfg.data, loaded.tally)
    if not train:
        raise DataError(cfg.data.train, None, "no training pairs left after validation", "empty")
    return train, held_out, users, loaded.tally


# -- the recipe ---------------------------------------------------------------------------------------------

@dataclass
class RewardRun:
    run_dir: Path
    model_dir: Path
    loop: LoopResult
    eval: dict
    model: RewardModel | None = None  # the trained model, as saved (adapters merged); on the main process


@torch.no_grad()
def batch_margins(model: RewardModel, batches: list[PairBatch], weights: torch.Tensor | None = None) -> np.ndarray:
    """`pair_margins` over several batches, as one array."""
    model.eval()
    margins = [pair_margins(model, b, weights) for b in batches]
    return torch.cat(margins).float().cpu().numpy() if margins else np.zeros(0)


def train_reward_model(cfg: RewardTrainConfig, resume: bool = False, console: Console | None = None,
                       overwrite: bool = False, on_step: Callable[[int, dict], None] | None = None) -> RewardRun:
    if cfg.model.ia3 is not None:
        raise ValueError("model.ia3: reward models take LoRA (model.lora) or train the full backbone")
    if cfg.engine.compile:
        raise ValueError("engine.compile: reward models are not compiled yet; set engine.compile: false")
    if cfg.engine.logp_chunk != EngineConfig().logp_chunk:
        raise ValueError("engine.logp_chunk: a reward model has no LM head to chunk; remove it")
    processes = start_processes(cfg.distributed, cfg.engine.autocast)
    if processes.strategy == "fsdp2":
        raise ValueError("reward models train in one process or with DDP (distributed.strategy: ddp); "
                         "FSDP2 shards causal LMs only for now")
    changed = claim_run_folder(Path(cfg.trainer.output_dir), cfg.model_dump(mode="json"), resume, overwrite, processes)
    console = console if processes.is_main else None
    report_machine(cfg.engine.threads, processes, console)
    report_resume(resume, changed, console)
    seed_everything(cfg.trainer.seed)
    path = resolve_path(cfg.model.name_or_path)
    kind = backbone_kind(path, cfg.model.trust_remote_code) if cfg.reward.backbone == "auto" else cfg.reward.backbone
    tokenizer = load_tokenizer(cfg.model)
    tok = RewardTokenizer(tokenizer, kind, cfg.data.max_length, cfg.data.max_prompt_length, cfg.data.too_long)
    train, held, users, tally = reward_pairs(cfg, tok)
    if console:
        for line in tally.summary_lines():
            console.print(f"data: {line}", markup=False)
    r = cfg.reward
    spec = RewardSpec(kind, r.head, r.objectives or ["reward"], r.dim if r.head != "scalar" else 0,
                      r.prototypes if r.head == "pal" else 0, users, max_length=cfg.data.max_length,
                      segment_ids=r.segment_ids and tok.segment_ids)
    model = build_reward_model(path, spec, DTYPES[cfg.model.dtype], cfg.model.trust_remote_code,
                               cfg.model.attn_implementation, cfg.model.allow_pickle).to(processes.device)
    if cfg.model.lora is not None:  # PERL (Sidahmed et al. 2024): LoRA on the backbone, the head in full
        task = "SEQ_CLS" if kind == "encoder" else "FEATURE_EXTRACTION"
        model.backbone = add_lora(model.backbone, cfg.model.lora, task)
    if cfg.model.gradient_checkpointing:
        enable_checkpointing(model.backbone)
    if cfg.model.disable_dropout:
        disable_dropout(model)
    packed = cfg.engine.packed and kind == "decoder"
    capacity = cfg.engine.pack_tokens if packed else None
    eval_batches = fixed_batches(held, cfg.trainer.eval_batch_size, tok.pad_id,
                                 collate=partial(collate_pairs, packed=packed, capacity=capacity))
    collate = partial(collate_pairs, pad_id=tok.pad_id, packed=packed, capacity=capacity)
    run_dir = Path(cfg.trainer.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if processes.is_main:
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    if console:
        truncated = tok.truncated + tok.completions.truncated
        console.print(f"reward model: {kind} backbone {cfg.model.name_or_path}, head {r.head}; "
                      f"{len(train)} training pairs, {len(held)} held out; {truncated} sequences truncated to "
                      f"{cfg.data.max_length} tokens")
    objective = RewardObjective(spec, r)
    with precision_context(cfg.engine, model):  # engine.autocast: bf16 matmuls, weights in model.dtype
        loop = train_loop(model, objective, LoopData(train, collate, eval_batches), cfg.trainer, run_dir,
                          resume=resume, on_step=on_step, console=console, processes=processes)
    if not processes.is_main:
        processes.barrier()
        return RewardRun(run_dir, run_dir / "reward_model", loop, {})
    model_dir = model.save(run_dir / "reward_model", pad_token_id=tok.pad_id)
    tokenizer.save_pretrained(model_dir / "backbone")
    margins = batch_margins(model, [b.to(processes.device) for b in eval_batches])
    summary = {"pairs_train": len(train), "pairs_held_out": len(held), "rows_skipped": dict(tally.counts),
               "steps": loop.steps, "skipped_steps": loop.skipped_steps}
    if len(margins):
        summary |= {"held_out_accuracy": pair_accuracy(margins), "held_out_ece": expected_calibration_error(margins)}
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    processes.barrier()
    return RewardRun(run_dir, model_dir, loop, summary, model)
