"""The CPU threads a run uses and how busy the machine already is. With other work on a small machine,
torch's default (one thread per core) makes every thread wait on the others: 10 steps took 23 s instead of
2 s with one thread. The run's first line says what it uses; it warns when the machine is oversubscribed."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class MachineLoad:
    threads: int  # torch's intra-op threads in this process
    processes: int  # processes of this run on this machine
    cores: int  # cores this process may run on
    load: float  # the 1-minute load average when the run started

    @property
    def oversubscribed(self) -> bool:
        """The run's threads and the work already running want more than the cores, by more than half one."""
        return self.load + self.threads * self.processes > self.cores + 0.5

    def line(self) -> str:
        return (f"threads: {self.threads} per process x {self.processes} on {self.cores} cores; "
                f"machine load {self.load:.1f}")

    def warning(self) -> str | None:
        if not self.oversubscribed:
            return None
        fit = max(1, int(self.cores - self.load) // self.processes)
        return (f"warning: the machine is busy (load {self.load:.1f} on {self.cores} cores) and this run adds "
                f"{self.threads * self.processes} threads; steps can be many times slower. Set engine.threads={fit} "
                "(or OMP_NUM_THREADS), or wait for the other work to finish")


def use_threads(threads: int | None) -> MachineLoad:
    """Set torch's thread count (None: keep torch's own, which respects OMP_NUM_THREADS) and measure the load;
    the run's processes on this machine are the launcher's LOCAL_WORLD_SIZE (torchrun, accelerate launch)."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if threads is not None:
        torch.set_num_threads(threads)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return MachineLoad(torch.get_num_threads(), local_processes, cores, os.getloadavg()[0])
