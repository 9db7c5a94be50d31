"""One plain training loop, shared by every recipe.

Each optimizer step takes `grad_accum` micro-batches. The loss is normalised over the whole effective batch:
an objective returns the *sum* of its per-unit losses (units are pairs for preference losses, tokens for SFT)
and the loop divides by the units of all micro-batches of the step, so 1 batch of 8 and 4 micro-batches of 2
give the same gradient."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file
from transformers import get_scheduler

from prefalign.config.schema import TrainerConfig
from prefalign.training.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from prefalign.training.data_order import Plan, micro_batches, shuffled_plan
from prefalign.training.metrics import MetricsLog


class Objective(Protocol):
    """What a recipe gives the loop."""

    def units(self, batch: Any) -> int:
        """How many units (pairs, tokens) the batch's loss sums over."""

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(sum of per-unit losses, per-example metric values to average)."""

    def num_tokens(self, batch: Any) -> int:
        """Tokens the forward pass processed (for tokens/s)."""


class Hooks(Protocol):
    """Work between optimizer steps (reference updates of TR-DPO, sDPO, Curry-DPO), with tensors that a
    checkpoint must keep for an exact resume."""

    def after_step(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """Called after optimizer step `step` (1-based); returns metrics to log."""

    def state_tensors(self) -> dict[str, torch.Tensor]: ...

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class LoopData:
    """The training examples, how to batch them and in which order (`plan`: default, shuffle everything each
    epoch); eval batches are prebuilt."""

    examples: Sequence[Any]
    collate: Callable[[list[Any], list[int]], Any]
    eval_batches: list[Any] = field(default_factory=list)
    plan: Plan | None = None
    hooks: Hooks | None = None


@dataclass
class LoopResult:
    steps: int
    skipped_steps: int
    seconds: float
    last_metrics: dict[str, float]
    eval_metrics: dict[str, float]


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainerConfig, n_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    # The fused kernel is the same AdamW in one pass over each tensor: several times faster than the
    # multi-tensor default and without its parameter-sized temporaries.
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.adam_betas, eps=cfg.adam_eps,
                                  weight_decay=cfg.weight_decay, fused=fused or None)
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * n_steps)
    name = {"constant": "constant_with_warmup"}.get(cfg.schedule, cfg.schedule)
    return optimizer, get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=n_steps)


def _mean_metrics(parts: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean of each metric over the examples of all micro-batches; a metric with no values (e.g. KTO's
    undesirable rewards in a batch of desirable examples only) is left out rather than logged as NaN."""
    keys = parts[0].keys() if parts else []
    values = {k: torch.cat([p[k].detach().float().reshape(-1) for p in parts if k in p]) for k in keys}
    return {k: v.mean().item() for k, v in values.items() if v.numel()}


def accumulate_gradients(model: torch.nn.Module, objective: Objective,
                         micro: list[Any]) -> tuple[float, list[dict[str, torch.Tensor]], int]:
    """Backward over the micro-batches of one step, each loss divided by the units of the whole step.
    Returns (the step's mean loss, the micro-batches' metrics, tokens processed)."""
    units = sum(objective.units(b) for b in micro)
    loss_total, parts, tokens = 0.0, [], 0
    for batch in micro:
        loss_sum, batch_metrics = objective.loss(model, batch)
        (loss_sum / units).backward()
        loss_total += loss_sum.item() / units
        parts.append(batch_metrics)
        tokens += objective.num_tokens(batch)
    return loss_total, parts, tokens


@torch.no_grad()
def evaluate(model: torch.nn.Module, objective: Objective, batches: list[Any]) -> dict[str, float]:
    was_training = model.training
    model.eval()
    total, units, parts = 0.0, 0, []
    for batch in batches:
        loss_sum, metrics = objective.loss(model, batch)
        total += loss_sum.item()
        units += objective.units(batch)
        parts.append(metrics)
    model.train(was_training)
    return {"eval/loss": total / max(units, 1), **{f"eval/{k}": v for k, v in _mean_metrics(parts).items()}}


def train_loop(model: torch.nn.Module, objective: Objective, data: LoopData, cfg: TrainerConfig, run_dir: Path,
               resume: bool = False, on_step: Callable[[int, dict], None] | None = None,
               console: Console | None = None, config_for_sinks: dict | None = None) -> LoopResult:
    plan = data.plan or shuffled_plan(len(data.examples), cfg.batch_size, cfg.grad_accum, cfg.seed)
    epoch_steps = {0: plan(0)}  # the current epoch's plan, built once per epoch rather than once per step
    per_epoch = len(epoch_steps[0])
    n_steps = cfg.max_steps or cfg.epochs * per_epoch
    # Losses with trainable parts of their own (SparsePO's mask) train alongside the policy.
    loss_modules = objective.build_modules(model) if hasattr(objective, "build_modules") else torch.nn.ModuleDict()
    params = [p for p in [*model.parameters(), *loss_modules.parameters()] if p.requires_grad]
    optimizer, scheduler = build_optimizer(params, cfg, n_steps)
    ckpt_dir = run_dir / "checkpoints"
    step, skipped, bad_in_a_row = 0, 0, 0
    if resume:
        found = list_checkpoints(ckpt_dir)
        if found:
            state = load_checkpoint(found[-1], model, optimizer, scheduler)
            step, skipped = state["step"], state["skipped_steps"]
            if hasattr(objective, "load_state_dict"):
                objective.load_state_dict(state.get("objective", {}))
            if data.hooks is not None:
                data.hooks.load_state_tensors(load_file(found[-1] / "hooks.safetensors"))
            if len(loss_modules):
                loss_modules.load_state_dict(load_file(found[-1] / "loss_modules.safetensors"))
            if console:
                console.print(f"resumed from {found[-1]} (step {step} of {n_steps})")
        elif console:
            console.print(f"--resume: no checkpoint in {ckpt_dir}; starting from step 0")
    log = MetricsLog(run_dir, cfg.sinks, step, cfg.wandb_project, config_for_sinks)
    model.train()
    metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    start = time.perf_counter()
    progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeRemainingColumn(), console=console, disable=not cfg.progress, transient=False)
    try:
        with progress:
            task = progress.add_task("train", total=n_steps, completed=step, info="")
            while step < n_steps:
                t0 = time.perf_counter()
                # A per-step seed makes dropout and sampling in a step independent of where the run resumed.
                torch.manual_seed(cfg.seed * 1_000_003 + step)
                epoch, position = divmod(step, per_epoch)
                if epoch not in epoch_steps:
                    epoch_steps = {epoch: plan(epoch)}
                micro = [data.collate([data.examples[i] for i in idx], idx)
                         for idx in micro_batches(epoch_steps[epoch][position], cfg.batch_size)]
                loss_total, parts, tokens = accumulate_gradients(model, objective, micro)
                max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
                finite = math.isfinite(loss_total) and math.isfinite(grad_norm)
                if finite:
                    optimizer.step()
                    bad_in_a_row = 0
                else:
                    skipped += 1
                    bad_in_a_row += 1
                optimizer.zero_grad(set_to_none=True)
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                step += 1
                metrics = {"loss": loss_total, **_mean_metrics(parts), "grad_norm": grad_norm, "lr": lr,
                           "tokens_per_s": tokens / max(time.perf_counter() - t0, 1e-9),
                           "skipped_steps": skipped}
                if data.hooks is not None:
                    metrics |= data.hooks.after_step(model, step)
                if bad_in_a_row >= cfg.max_bad_steps:
                    raise TrainingDiverged(
                        f"stopped at step {step}: {bad_in_a_row} steps in a row had a non-finite loss or gradient "
                        f"(loss={loss_total}, grad_norm={grad_norm}); lower trainer.lr or check the data")
                evaluated = bool(data.eval_batches) and ((cfg.eval_every and step % cfg.eval_every == 0) or step == n_steps)
                if evaluated:
                    eval_metrics = evaluate(model, objective, data.eval_batches)
                    metrics.update(eval_metrics)
                if step % cfg.log_every == 0 or step == n_steps or evaluated:
                    log.write(step, metrics)
                if cfg.save_every and (step % cfg.save_every == 0 or step == n_steps):
                    objective_state = objective.state_dict() if hasattr(objective, "state_dict") else {}
                    tensors = {"hooks": data.hooks.state_tensors()} if data.hooks is not None else {}
                    if len(loss_modules):
                        tensors["loss_modules"] = loss_modules.state_dict()
                    save_checkpoint(ckpt_dir, step, model, optimizer, scheduler,
                                    {"skipped_steps": skipped, "objective": objective_state}, cfg.keep_last, tensors)
                info = f"loss {loss_total:.4f}" + (f" acc {metrics['rewards/accuracies']:.2f}"
                                                    if "rewards/accuracies" in metrics else "")
                progress.update(task, completed=step, info=info)
                if on_step is not None:
                    on_step(step, metrics)
    finally:
        log.close()
    return LoopResult(step, skipped, time.perf_counter() - start, metrics, eval_metrics)
