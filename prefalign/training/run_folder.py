"""A run folder belongs to one run. A new run refuses a folder that holds another one unless told to
overwrite it (two runs' checkpoints and metrics would mix, and a later --resume would load the other run's
weights); --resume refuses a config that differs from the run's in anything but what a resume may change.

The run's identity is its resolved config as given, without the keys below, kept in `run.json`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from prefalign.atomic_files import write_text_atomic

if TYPE_CHECKING:
    from prefalign.training.distributed import Processes

IDENTITY_FILE = "run.json"
# What a run writes into its folder; --overwrite removes these and nothing else.
RUN_ENTRIES = ("run.json", "config.yaml", "config.json", "metrics.jsonl", "rollouts.jsonl", "checkpoints", "model",
               "adapter", "reward_model", "summary.json", "report.html", "data", "tensorboard")
# What shows a folder holds a run that trained: a folder with only the files a failed start writes is reused.
TRAINED_ENTRIES = ("metrics.jsonl", "rollouts.jsonl", "checkpoints", "model", "adapter", "reward_model")
# Keys a resumed run may change: how long it runs, how it logs, saves and guards its steps, how many processes
# run it, and whether the decoder is compiled.
MAY_CHANGE_ON_RESUME = ("trainer.max_steps", "trainer.epochs", "trainer.save_every", "trainer.keep_last",
                        "trainer.log_every", "trainer.eval_every", "trainer.progress", "trainer.sinks",
                        "trainer.wandb_project", "trainer.max_bad_steps", "trainer.on_nonfinite_update",
                        "trainer.max_weight_growth",
                        "trainer.output_dir", "distributed", "engine.compile", "engine.threads")


class RunFolderError(ValueError):
    """The run folder holds another run, or the resumed run's config is not this one."""


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= flatten(value, path + ".")
        else:
            out[path] = value
    return out


def may_change_on_resume(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in MAY_CHANGE_ON_RESUME)


def run_identity(resolved: dict) -> dict[str, object]:
    return {k: v for k, v in flatten(resolved).items() if not may_change_on_resume(k)}


def holds_a_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and any((run_dir / name).exists() for name in TRAINED_ENTRIES)


def check_resume(run_dir: Path, identity: dict[str, object]) -> None:
    saved_file = run_dir / IDENTITY_FILE
    if not saved_file.exists():
        return  # a folder from before run.json, or a fresh one: nothing to compare against
    saved = json.loads(saved_file.read_text())["identity"]
    # A key the saved run does not have was added to prefalign after it was made: not a change of config.
    changed = [k for k in sorted(saved) if saved[k] != identity.get(k, "<unset>")]
    if changed:
        shown = "; ".join(f"{k}: {saved.get(k, '<unset>')!r} -> {identity.get(k, '<unset>')!r}" for k in changed[:5])
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise RunFolderError(f"--resume: {run_dir} holds a run with a different config ({shown}{more}); resume it "
                             f"with its own config, or start this one in a new trainer.output_dir")


def check_run_folder(run_dir: Path, resolved: dict, resume: bool, overwrite: bool) -> None:
    """Every process checks before any of them changes the folder."""
    if resume:
        check_resume(run_dir, run_identity(resolved))
    elif holds_a_run(run_dir) and not overwrite:
        raise RunFolderError(f"{run_dir} already holds a run; pass --resume to continue it or --overwrite to "
                             f"replace it, or set another trainer.output_dir")


def prepare_run_folder(run_dir: Path, resolved: dict, resume: bool, overwrite: bool) -> None:
    """On the main process, after `check_run_folder`: clear what another run left (with --overwrite) and
    record this run's identity."""
    if overwrite and not resume:
        for name in RUN_ENTRIES:
            entry = run_dir / name
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
    if not (resume and (run_dir / IDENTITY_FILE).exists()):
        write_text_atomic(run_dir / IDENTITY_FILE, json.dumps({"identity": run_identity(resolved)}, indent=1,
                                                              default=str))


def run_config(run_dir: Path) -> dict:
    """The resolved config a run wrote into its folder (config.yaml), or {} where there is none."""
    import yaml

    written = Path(run_dir) / "config.yaml"
    return (yaml.safe_load(written.read_text()) or {}) if written.exists() else {}


def changed_on_resume(run_dir: Path, resolved: dict) -> list[str]:
    """The settings a resumed run changes (those it may: MAY_CHANGE_ON_RESUME), as `key: old -> new`, read
    against the config.yaml the run wrote when it started."""
    if not (run_dir / "config.yaml").exists():
        return []
    before, now = flatten(run_config(run_dir)), flatten(resolved)
    return [f"{k}: {before.get(k, '<unset>')!r} -> {now[k]!r}" for k in sorted(now)
            if may_change_on_resume(k) and k != "distributed.world_size" and before.get(k) != now[k]]


def claim_run_folder(run_dir: Path, resolved: dict, resume: bool, overwrite: bool, processes: Processes) -> list[str]:
    """Check and prepare the folder on every process; returns the settings a resumed run changes."""
    check_run_folder(run_dir, resolved, resume, overwrite)
    changed = changed_on_resume(run_dir, resolved) if resume else []
    processes.barrier()  # nobody changes the folder before every process has looked at it
    if processes.is_main:
        prepare_run_folder(run_dir, resolved, resume, overwrite)
    processes.barrier()
    return changed
