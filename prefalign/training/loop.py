"""One plain training loop, shared by every recipe.

Each optimizer step takes the micro-batches its batch source hands this process. The loss is normalised over
the whole effective batch: an objective returns the *sum* of its per-unit losses (units are pairs for
preference losses, tokens for SFT) and the loop divides by the units of all micro-batches of all processes, so
1 batch of 8, 4 micro-batches of 2 and 2 processes with 4 each give the same gradient. Losses whose terms
couple the examples of a batch (KTO's z0, beta-DPO's batch beta, AOT's sort, BCO's baseline) see the whole
step through the objective's `prepare_step` (training/coupled.py), so the same holds for them."""

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
from torch.distributed.tensor import DTensor
from transformers import get_scheduler

from prefalign.config.loading import ConfigError
from prefalign.config.schema import TrainerConfig
from prefalign.models.logprobs import unwrap
from prefalign.training.batch_sources import BatchSource, DatasetSource, StepBatches
from prefalign.training.checkpoint import Checkpoint, list_checkpoints, read_checkpoint, save_checkpoint
from prefalign.training.data_order import Plan
from prefalign.training.distributed import Processes, start_processes, total_norm
from prefalign.training.errors import TrainingDiverged
from prefalign.training.metrics import MetricsLog
from prefalign.training.online_merging import OnlineMergingAdamW, base_model_params
from prefalign.training.update_guard import count_nonfinite, restore, squared_norm, take_snapshot


class Objective(Protocol):
    """What a recipe gives the loop. The last four are optional capabilities with do-nothing defaults: an
    objective that has them overrides them."""

    def units(self, batch: Any) -> int:
        """How many units (pairs, tokens) the batch's loss sums over."""

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(sum of per-unit losses, per-example metric values to average)."""

    def num_tokens(self, batch: Any) -> int:
        """Tokens the forward pass processed (for tokens/s)."""

    def build_modules(self, policy: torch.nn.Module) -> torch.nn.ModuleDict:
        """Trainable modules of the loss itself (SparsePO's mask), trained and checkpointed with the policy."""
        return torch.nn.ModuleDict()

    def state_dict(self) -> dict:
        """Running statistics (BCO, beta-DPO) that a checkpoint keeps."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None

    def prepare_step(self, model: torch.nn.Module, step: StepBatches, processes: Processes) -> None:
        """Called with a step's micro-batches before their backward passes (losses that couple a step)."""
        return None


class Hooks(Protocol):
    """Work between optimizer steps (reference updates of TR-DPO, sDPO, Curry-DPO), with tensors that a
    checkpoint must keep for an exact resume."""

    def after_step(self, model: torch.nn.Module, step: int) -> dict[str, float]:
        """Called after optimizer step `step` (1-based); returns metrics to log."""

    def state_tensors(self) -> dict[str, torch.Tensor]: ...

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...


@dataclass
class LoopData:
    """What to train on: a batch source, or fixed examples that `collate` batches and `plan` orders (default:
    shuffle everything each epoch) through a dataset source. Eval batches are prebuilt."""

    source: BatchSource | Sequence[Any]
    collate: Callable[[list[Any], list[int]], Any] | None = None
    eval_batches: list[Any] = field(default_factory=list)
    plan: Plan | None = None
    hooks: Hooks | None = None

    def batch_source(self, cfg: TrainerConfig, processes: Processes) -> BatchSource:
        if not isinstance(self.source, Sequence):
            return self.source
        return DatasetSource(self.source, self.collate, cfg, self.plan, processes.rank, processes.world)


@dataclass
class LoopResult:
    steps: int
    skipped_steps: int
    seconds: float
    last_metrics: dict[str, float]
    eval_metrics: dict[str, float]


def build_optimizer(named: list[tuple[str, torch.nn.Parameter]], cfg: TrainerConfig,
                    n_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    params = [p for _, p in named]
    # The fused kernel is the same AdamW in one pass over each tensor: several times faster than the
    # multi-tensor default and without its parameter-sized temporaries.
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    adamw = {"lr": cfg.lr, "betas": cfg.adam_betas, "eps": cfg.adam_eps, "weight_decay": cfg.weight_decay,
             "fused": fused or None}
    if cfg.online_merging is None:
        optimizer = torch.optim.AdamW(params, **adamw)
    else:
        if any(isinstance(p, DTensor) for p in params):
            raise ConfigError("trainer.online_merging: not with distributed.strategy fsdp2 (sharded parameters); "
                              "use one process or ddp")
        optimizer = OnlineMergingAdamW(named, cfg.online_merging, cfg.seed, base_model_params(cfg.online_merging.base),
                                       **adamw)
    warmup = cfg.warmup_steps or int(cfg.warmup_ratio * n_steps)
    name = {"constant": "constant_with_warmup"}.get(cfg.schedule, cfg.schedule)
    return optimizer, get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=n_steps)


def accumulate_gradients(model: torch.nn.Module, objective: Objective, micro: list[Any] | StepBatches,
                         processes: Processes | None = None) -> tuple[float, list[dict[str, torch.Tensor]], int]:
    """Backward over this process's micro-batches of one step, each loss divided by the units of the whole
    step over all processes (times the world size, which DDP and FSDP average over); gradients are reduced
    across processes on the last micro-batch only. Returns (the step's mean loss, the counted micro-batches'
    metrics, tokens processed here)."""
    processes = processes or start_processes()
    step = micro if isinstance(micro, StepBatches) else StepBatches(list(micro))
    counted = step.counted
    units = processes.sum([sum(objective.units(b) for b in counted)])[0]
    objective.prepare_step(model, step, processes)
    loss_total, parts, tokens = 0.0, [], 0
    for j, batch in enumerate(step.micro):
        real = j < len(counted)
        sync = j == len(step.micro) - 1
        with processes.accumulation(model, sync):
            loss_sum, batch_metrics = objective.loss(model, batch)
            (loss_sum * (processes.world / units if real else 0.0)).backward()
        if real:
            loss_total += loss_sum.item() / units
            parts.append(batch_metrics)
            tokens += objective.num_tokens(batch)
    return processes.sum([loss_total])[0], parts, tokens


@torch.no_grad()
def evaluate(model: torch.nn.Module, objective: Objective, batches: list[Any],
             processes: Processes | None = None) -> dict[str, float]:
    """Every process evaluates every batch (a sharded model needs them all in each forward pass)."""
    was_training = model.training
    model.eval()
    total, units, parts = 0.0, 0, []
    for batch in batches:
        loss_sum, metrics = objective.loss(model, batch)
        total += loss_sum.item()
        units += objective.units(batch)
        parts.append(metrics)
    model.train(was_training)
    means = (processes or start_processes()).mean_metrics(parts)
    return {"eval/loss": total / max(units, 1), **{f"eval/{k}": v for k, v in means.items()}}


@dataclass
class _Run:
    """The parts of a run the loop's helpers share."""

    model: torch.nn.Module  # the module forward passes go through (a DDP wrapper, or the model itself)
    objective: Objective
    source: BatchSource
    hooks: Hooks | None
    loss_modules: torch.nn.ModuleDict
    optimizer: torch.optim.Optimizer
    scheduler: Any
    processes: Processes
    weight_sq: float | None = None  # the trained weights' squared norm after the last applied step

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return _trained_params(self.model, self.loss_modules)


def _trained_params(model: torch.nn.Module, loss_modules: torch.nn.ModuleDict) -> list[torch.nn.Parameter]:
    return [p for _, p in _trained_named(model, loss_modules)]


def _trained_named(model: torch.nn.Module, loss_modules: torch.nn.ModuleDict) -> list[tuple[str, torch.nn.Parameter]]:
    named = [*unwrap(model).named_parameters(), *loss_modules.named_parameters(prefix="loss_modules")]
    return [(name, p) for name, p in named if p.requires_grad]


def _checkpoint(run: _Run, step: int, skipped: int) -> Checkpoint:
    """Gathered on every process (a collective under FSDP2); only rank 0 writes it."""
    p = run.processes
    tensors = {"hooks": run.hooks.state_tensors()} if run.hooks is not None else {}
    if len(run.loss_modules):
        tensors["loss_modules"] = run.loss_modules.state_dict()
    state = {"skipped_steps": skipped, "objective": run.objective.state_dict(), "source": run.source.state_dict(),
             "world_size": p.world}
    return Checkpoint(p.trainable_state(run.model), p.optimizer_state(run.model, run.optimizer, run.loss_modules),
                      run.scheduler.state_dict(), state, tensors)


def _resume(run: _Run, ckpt_dir: Path, n_steps: int, console: Console | None) -> tuple[int, int]:
    found = list_checkpoints(ckpt_dir)
    if not found:
        if console:
            console.print(f"--resume: no checkpoint in {ckpt_dir}; starting from step 0")
        return 0, 0
    names = {n for n, p in unwrap(run.model).named_parameters() if p.requires_grad}
    files = (["hooks"] if run.hooks is not None else []) + (["loss_modules"] if len(run.loss_modules) else [])
    ckpt = read_checkpoint(found[-1], names, files)
    run.processes.load_trainable(run.model, ckpt.trainable)
    run.processes.load_optimizer(run.model, run.optimizer, run.loss_modules, ckpt.optimizer)
    run.scheduler.load_state_dict(ckpt.scheduler)
    run.objective.load_state_dict(ckpt.state.get("objective", {}))
    run.source.load_state_dict(ckpt.state.get("source", {}))
    if run.hooks is not None:
        run.hooks.load_state_tensors(ckpt.tensors["hooks"])
    if len(run.loss_modules):
        run.loss_modules.load_state_dict(ckpt.tensors["loss_modules"])
    step = ckpt.state["step"]
    if console:
        console.print(f"resumed from {found[-1]} (step {step} of {n_steps})")
    return step, ckpt.state["skipped_steps"]


def _optimizer_step(run: _Run, cfg: TrainerConfig, step: int) -> tuple[dict[str, float], bool]:
    """One optimizer step over this process's micro-batches; the step is skipped on every process when the
    loss or the gradient is not finite (both are reduced over processes, so every rank decides alike)."""
    fetch = time.perf_counter()
    # A per-step seed makes dropout and sampling in a step independent of where the run resumed.
    torch.manual_seed(cfg.seed * 1_000_003 + step)
    batches = run.source.step(step)
    t0 = time.perf_counter()
    device = run.processes.device
    batches = StepBatches([b.to(device) for b in batches.micro], batches.fillers)
    loss_total, parts, tokens = accumulate_gradients(run.model, run.objective, batches, run.processes)
    if run.processes.world > 1 and len(run.loss_modules):
        for p in run.loss_modules.parameters():  # not inside the DDP/FSDP module: averaged here
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
    grad_norm = total_norm(torch.nn.utils.clip_grad_norm_(run.params, max_norm))
    finite = math.isfinite(loss_total) and math.isfinite(grad_norm)
    if finite:
        finite = _guarded_update(run, cfg, step)
    run.optimizer.zero_grad(set_to_none=True)
    lr = run.scheduler.get_last_lr()[0]
    run.scheduler.step()
    tokens = run.processes.sum([float(tokens)])[0]
    train_s = time.perf_counter() - t0
    return {"loss": loss_total, **run.processes.mean_metrics(parts), "grad_norm": grad_norm, "lr": lr,
            "tokens_per_s": tokens / max(train_s, 1e-9), "time/batches": t0 - fetch, "time/train": train_s,
            **run.source.metrics()}, finite


def _guarded_update(run: _Run, cfg: TrainerConfig, step: int) -> bool:
    """The optimizer step, undone (or the run stopped) when it leaves a non-finite weight on any process or
    multiplies the trained weights' norm by more than trainer.max_weight_growth."""
    snapshot = take_snapshot(run.params, run.optimizer) if cfg.on_nonfinite_update == "undo" else None
    if run.weight_sq is None:
        run.weight_sq = run.processes.sum([squared_norm(run.params)])[0]
    run.optimizer.step()
    # One pass over the weights per step: the float64 norm is finite exactly when every weight is, so the
    # non-finite count (for the message) is only taken when it is not; every rank sees the same reduced sum.
    weight_sq = run.processes.sum([squared_norm(run.params)])[0]
    bad = 0.0 if math.isfinite(weight_sq) else run.processes.sum([float(count_nonfinite(run.params))])[0]
    growth = math.sqrt(weight_sq / run.weight_sq) if run.weight_sq > 0 and not bad else 1.0
    if not bad and (cfg.max_weight_growth is None or growth <= cfg.max_weight_growth):
        run.weight_sq = weight_sq
        return True
    what = (f"left {bad:.0f} non-finite weights" if bad else
            f"multiplied the trained weights' norm by {growth:.3g} (trainer.max_weight_growth={cfg.max_weight_growth})")
    if snapshot is None:
        raise TrainingDiverged(f"step {step + 1}: the update {what} (trainer.lr={cfg.lr}); stopped before saving "
                               "them (the newest checkpoint is from before); lower trainer.lr")
    restore(snapshot, run.params, run.optimizer)
    return False


def _stop_diverged(step: int, bad_in_a_row: int, metrics: dict[str, float], log: MetricsLog | None) -> None:
    """The stopping step goes to metrics.jsonl, then the run fails; no checkpoint was written in the streak."""
    if log is not None:
        log.write(step, metrics)
    raise TrainingDiverged(
        f"stopped at step {step}: {bad_in_a_row} steps in a row had a non-finite loss, gradient or update "
        f"(loss={metrics['loss']}, grad_norm={metrics['grad_norm']}); the newest checkpoint is from before them; "
        "lower trainer.lr or check the data")


def _build_run(model: torch.nn.Module, objective: Objective, data: LoopData, cfg: TrainerConfig,
               processes: Processes) -> _Run:
    source = data.batch_source(cfg, processes)
    loss_modules = objective.build_modules(unwrap(model)).to(processes.device)
    forward_model = processes.prepare(model)  # before the optimizer: sharding replaces the parameters
    optimizer, scheduler = build_optimizer(_trained_named(forward_model, loss_modules), cfg, source.num_steps)
    return _Run(forward_model, objective, source, data.hooks, loss_modules, optimizer, scheduler, processes)


def _progress(cfg: TrainerConfig, console: Console | None) -> Progress:
    """A bar on a terminal; nothing elsewhere (a log file gets `_log_line`s instead of one redrawn bar)."""
    shown = cfg.progress and console is not None and console.is_terminal
    return Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeRemainingColumn(), console=console, disable=not shown, transient=False)


LOG_LINE = {"loss": ".4f", "rewards/accuracies": ".3f", "accuracy": ".3f", "grad_norm": ".3g", "lr": ".3g",
            "tokens_per_s": ".0f"}


def _log_line(step: int, n_steps: int, metrics: dict[str, float]) -> str:
    """One plain line per logged step, for output that is not a terminal (nohup, SLURM, CI logs)."""
    keys = [k for k in LOG_LINE if k in metrics] + sorted(k for k in metrics if k.startswith("eval/"))
    return f"step {step}/{n_steps} " + " ".join(f"{k} {metrics[k]:{LOG_LINE.get(k, '.4f')}}" for k in keys)


def train_loop(model: torch.nn.Module, objective: Objective, data: LoopData, cfg: TrainerConfig, run_dir: Path,
               resume: bool = False, on_step: Callable[[int, dict], None] | None = None,
               console: Console | None = None, config_for_sinks: dict | None = None,
               processes: Processes | None = None) -> LoopResult:
    """Train `model` in place. Under several processes, `model` is wrapped or sharded here; only rank 0
    writes metrics, checkpoints and progress."""
    processes = processes or start_processes()
    main = processes.is_main
    console = console if main else None
    run = _build_run(model, objective, data, cfg, processes)
    n_steps = run.source.num_steps
    ckpt_dir = run_dir / "checkpoints"
    step, skipped = _resume(run, ckpt_dir, n_steps, console) if resume else (0, 0)
    bad_in_a_row = 0
    log = MetricsLog(run_dir, cfg.sinks, step, cfg.wandb_project, config_for_sinks) if main else None
    eval_batches = [b.to(processes.device) for b in data.eval_batches]
    model.train()
    metrics: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    start = time.perf_counter()
    try:
        lines = cfg.progress and console is not None and not console.is_terminal
        with _progress(cfg, console) as progress:
            task = progress.add_task("train", total=n_steps, completed=step, info="")
            while step < n_steps:
                metrics, finite = _optimizer_step(run, cfg, step)
                skipped, bad_in_a_row = (skipped, 0) if finite else (skipped + 1, bad_in_a_row + 1)
                step += 1
                metrics |= {"skipped_steps": skipped, "world_size": processes.world}
                if data.hooks is not None:
                    metrics |= data.hooks.after_step(unwrap(run.model), step)
                if bad_in_a_row >= cfg.max_bad_steps:
                    _stop_diverged(step, bad_in_a_row, metrics, log)
                evaluated = bool(eval_batches) and ((cfg.eval_every and step % cfg.eval_every == 0) or step == n_steps)
                if evaluated:
                    eval_metrics = evaluate(run.model, objective, eval_batches, processes)
                    metrics.update(eval_metrics)
                if log is not None and (step % cfg.log_every == 0 or step == n_steps or evaluated):
                    log.write(step, metrics)
                    if lines:
                        console.print(_log_line(step, n_steps, metrics), markup=False, highlight=False)
                # Never during a streak of skipped steps: keep-last pruning would drop the last good state.
                if cfg.save_every and (step % cfg.save_every == 0 or step == n_steps) and not bad_in_a_row:
                    ckpt = _checkpoint(run, step, skipped)
                    if main:
                        save_checkpoint(ckpt_dir, step, ckpt, cfg.keep_last)
                    processes.barrier()
                info = f"loss {metrics['loss']:.4f}" + (f" acc {metrics['rewards/accuracies']:.2f}"
                                                        if "rewards/accuracies" in metrics else "")
                progress.update(task, completed=step, info=info)
                if on_step is not None:
                    on_step(step, metrics)
        if step and skipped >= step:
            raise TrainingDiverged(f"no step was applied: all {step} had a non-finite loss, gradient or update "
                                   "(see metrics.jsonl); nothing was exported")
    finally:
        if log is not None:
            log.close()
    return LoopResult(step, skipped, time.perf_counter() - start, metrics, eval_metrics)
