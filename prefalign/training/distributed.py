"""One process or many, through accelerate: the device, the process group, and how the policy is replicated.

Launch with `torchrun --nproc_per_node N` or `accelerate launch` (config files in prefalign/configs/accelerate);
one process needs nothing. accelerate's `Accelerator` chooses the device (CUDA when present, else CPU),
starts the process group (NCCL on GPUs, gloo on CPUs) and wraps the policy in DDP. FSDP2 is torch's own
`fully_shard`, applied per transformer block and then to the whole model, as accelerate and torchtune do;
it is called directly because accelerate turns an FSDP request into DDP on CPU, and a sharding request must
never be silently downgraded.

Every rank holds the same weights at the start (same seed, same files), sees its own share of each step's
examples (training/batch_sources.py) and backpropagates its share's summed loss divided by the units of the
whole step over all ranks, times the world size, because DDP and FSDP average gradients over ranks."""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from prefalign.config.schema import DistributedConfig
from prefalign.models.logprobs import causal_lm, unwrap

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _accelerate_asks_for() -> str | None:
    """The engine an `accelerate launch --config_file` asked for, from the variables accelerate sets."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp2"
    return None


@dataclass
class Processes:
    """This process's place in the run. `strategy`: single (one process), ddp or fsdp2."""

    accelerator: Accelerator
    strategy: str

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # -- the model ----------------------------------------------------------------------------------------

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module whose forward training calls: the model itself, its DDP wrapper, or the model sharded
        in place. Build the optimizer after this: sharding replaces the parameters."""
        if self.strategy == "ddp":
            return self.accelerator.prepare_model(model, device_placement=True)
        return self.place(model)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """On this process's device, sharded under FSDP2 (as a frozen reference is, without a DDP wrapper)."""
        model.to(self.device)
        if self.strategy == "fsdp2":
            shard(model)
        return model

    def accumulation(self, model: torch.nn.Module, sync: bool) -> Any:
        """Gradients are reduced across ranks only on a step's last micro-batch."""
        if self.strategy == "ddp" and not sync:
            return model.no_sync()
        if self.strategy == "fsdp2":
            model.set_requires_gradient_sync(sync)
        return nullcontext()

    # -- reductions ---------------------------------------------------------------------------------------

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def mean_metrics(self, parts: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Mean of each metric over the examples of all micro-batches of all ranks; a metric with no values
        anywhere (KTO's undesirable rewards in a batch of desirable examples only) is left out, not NaN."""
        sums = [{k: (v.detach().float().sum().item(), v.numel()) for k, v in part.items()} for part in parts]
        if self.world > 1:
            gathered: list[list[dict]] = [[] for _ in range(self.world)]
            dist.all_gather_object(gathered, sums)
            sums = [part for rank in gathered for part in rank]
        totals: dict[str, list[float]] = {}
        for part in sums:
            for k, (s, n) in part.items():
                total = totals.setdefault(k, [0.0, 0.0])
                total[0] += s
                total[1] += n
        return {k: s / n for k, (s, n) in totals.items() if n}

    def gather_rows(self, t: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Every rank's rows of `t` (dim 0) in rank order, and how many each rank gave; ranks may hold
        different numbers of rows."""
        if self.world == 1:
            return t, [t.shape[0]]
        sizes = self.accelerator.gather(torch.tensor([t.shape[0]], device=self.device)).tolist()
        was_bool = t.dtype == torch.bool
        padded = self.accelerator.pad_across_processes(t.to(torch.uint8) if was_bool else t.contiguous(), dim=0)
        gathered = self.accelerator.gather(padded)
        rows = max(sizes)
        out = torch.cat([gathered[r * rows:r * rows + n] for r, n in enumerate(sizes)])
        return (out.bool() if was_bool else out), sizes

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    # -- state --------------------------------------------------------------------------------------------

    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The full trainable tensors on the CPU (gathered from the shards under FSDP2; on rank 0 only)."""
        model = unwrap(model)
        if self.strategy != "fsdp2":  # only the trainable tensors leave the device (a LoRA base stays put)
            return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        return {n: t.contiguous() for n, t in get_model_state_dict(model, options=FULL).items() if n in names}

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        loss_modules: torch.nn.Module) -> dict:
        """The optimizer state keyed by parameter name (`model.*`, `loss_modules.*`), whole on the CPU: the
        same file at any world size."""
        return get_optimizer_state_dict(_trained(model, loss_modules), optimizer, options=FULL)

    def load_trainable(self, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        model = unwrap(model)
        if self.strategy == "fsdp2":
            set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))
            return
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in tensors.items():
                params[name].copy_(tensor)

    def load_optimizer(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_modules: torch.nn.Module,
                       state: dict) -> None:
        set_optimizer_state_dict(_trained(model, loss_modules), optimizer, state,
                                 options=StateDictOptions(full_state_dict=True))

    def consolidated(self, model: torch.nn.Module, build: Callable[[], torch.nn.Module]) -> torch.nn.Module | None:
        """The trained model as one whole module for export: the model itself unless sharded; under FSDP2 a
        fresh copy from `build` with the gathered weights, on rank 0 (None on the others)."""
        model = unwrap(model)
        if self.strategy != "fsdp2":
            return model
        full = get_model_state_dict(model, options=FULL)
        if not self.is_main:
            return None
        whole = build()
        whole.load_state_dict(full)
        return whole


def _trained(model: torch.nn.Module, loss_modules: torch.nn.Module) -> torch.nn.Module:
    """Everything the optimizer updates under one module, so that its state is named by parameter."""
    return torch.nn.ModuleDict({"model": unwrap(model), "loss_modules": loss_modules})


def shard(model: torch.nn.Module) -> None:
    """FSDP2: each transformer block its own unit (transformers names them in `_no_split_modules`), then the
    rest of the model as the root unit."""
    lm = causal_lm(model)
    blocks = set(getattr(lm, "_no_split_modules", None) or [])
    units = [m for m in lm.modules() if type(m).__name__ in blocks]
    if not units:
        raise ValueError(f"distributed.strategy=fsdp2: {type(lm).__name__} names no transformer blocks "
                         "(_no_split_modules); use ddp")
    for unit in units:
        fully_shard(unit)
    fully_shard(unwrap(model))


def total_norm(norm: torch.Tensor) -> float:
    """clip_grad_norm_'s result as a number (a DTensor under FSDP2)."""
    return (norm.full_tensor() if isinstance(norm, DTensor) else norm).item()


def start_processes(cfg: DistributedConfig | None = None, autocast: str = "off") -> Processes:
    """This process's Processes: reads the launcher's environment (torchrun, accelerate launch); one plain
    process otherwise. Mixed precision is `engine.autocast` (`autocast`), never accelerate's own setting, so
    an accelerate config that asks for it must agree."""
    cfg = cfg or DistributedConfig()
    asked = _accelerate_asks_for()
    launcher_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher_precision not in ("no", autocast):
        raise ValueError(f"the accelerate config asks for mixed_precision {launcher_precision}, but engine.autocast is "
                         f"{autocast}; set engine.autocast (off or bf16) and mixed_precision: 'no' in the accelerate config")
    if asked == "deepspeed":
        raise ValueError("the accelerate config asks for DeepSpeed, which prefalign does not drive yet; "
                         "use distributed.strategy: ddp or fsdp2 (see docs/scaling.md)")
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    world = accelerator.num_processes
    strategy = cfg.strategy
    if strategy == "auto":
        strategy = asked or ("ddp" if world > 1 else "single")
    elif asked == "fsdp2" and strategy != "fsdp2":
        raise ValueError(f"the accelerate config asks for FSDP but distributed.strategy is {strategy}; "
                         "set distributed.strategy: fsdp2 or launch without the FSDP config")
    if strategy == "ddp" and world == 1:
        strategy = "single"
    if world > 1:
        atexit.register(_end_process_group)
    return Processes(accelerator, strategy)


def _end_process_group() -> None:
    """Destroy the process group before the interpreter tears down: left to its destructor, gloo's threads can
    outlive it and abort the process ("terminate called without an active exception"), after a run that
    finished, under load."""
    if dist.is_initialized():
        dist.destroy_process_group()
