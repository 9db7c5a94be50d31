"""Metric sinks: a JSONL log in the run folder (always), TensorBoard and W&B when asked for."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from prefalign.atomic_files import write_text_atomic
from prefalign.extras import import_extra


def read_jsonl(path: Path) -> list[dict]:
    """The records of a run's JSONL log (metrics.jsonl, rollouts.jsonl)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def keep_logged(path: Path, keep: Callable[[dict], bool]) -> None:
    """Rewrite a JSONL log with only the records `keep` accepts: a resumed run drops what the interrupted
    one logged after its checkpoint, because it logs that again."""
    if path.exists():
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if keep(r)))


class MetricsLog:
    def __init__(self, run_dir: Path, sinks: list[str], resume_step: int = 0, wandb_project: str = "prefalign",
                 config: dict | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step:
            keep_logged(self.path, lambda r: r.get("step", 0) <= resume_step)
        elif self.path.exists():
            self.path.unlink()
        self._tb = self._wandb = None
        if "tensorboard" in sinks:
            tensorboard = import_extra("torch.utils.tensorboard", "tensorboard", "the tensorboard sink")
            self._tb = tensorboard.SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in sinks:
            wandb = import_extra("wandb", "wandb", "the wandb sink")
            self._wandb = wandb.init(project=wandb_project, dir=str(run_dir), config=config or {}, resume="allow")

    def write(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(run_dir: Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / "metrics.jsonl")
