"""Publish a run's model, adapter or reward model on the Hugging Face Hub with a model card generated from the
run: its base model, losses, data, settings and last evaluation. `prefalign push RUN REPO_ID`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from prefalign.atomic_files import write_text_atomic
from prefalign.training.metrics import read_metrics
from prefalign.training.run_folder import run_config

LOADERS = {"model": "from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM.from_pretrained({repo!r})",
           "adapter": "from peft import AutoPeftModelForCausalLM\n\nmodel = AutoPeftModelForCausalLM.from_pretrained({repo!r})",
           "reward_model": "from transformers import AutoModelForSequenceClassification\n\n"
                           "model = AutoModelForSequenceClassification.from_pretrained({repo!r}, subfolder=\"backbone\")"}


@dataclass
class Upload:
    folder: Path  # what goes to the hub, model card included
    repo_id: str
    kind: str  # model | adapter | reward_model
    files: list[str]


def _what(run_dir: Path, kind: str | None) -> str:
    present = [k for k in ("adapter", "reward_model", "model") if (run_dir / k).is_dir()]
    if kind is None:
        if not present:
            raise FileNotFoundError(f"{run_dir}: no model/, adapter/ or reward_model/ to push (did the run finish?)")
        return present[0]
    if kind not in present:
        raise FileNotFoundError(f"{run_dir}: no {kind}/ to push; the run holds {', '.join(present) or 'none'}")
    return kind


def model_card(run_dir: Path, repo_id: str, kind: str) -> str:
    """README.md: YAML metadata the hub reads (library, base model, tags), then how the model was trained."""
    config = run_config(run_dir)
    base = config.get("model", {}).get("name_or_path", "unknown")
    losses = [t.get("name") for t in config.get("loss", [])] or (["bradley-terry"] if kind == "reward_model" else [])
    meta = {"library_name": "peft" if kind == "adapter" else "transformers", "base_model": base,
            "tags": ["prefalign", *losses, "reward-model" if kind == "reward_model" else "preference-optimization"]}
    trainer = config.get("trainer", {})
    settings = {k: trainer.get(k) for k in ("lr", "batch_size", "grad_accum", "max_steps", "epochs", "schedule", "seed")}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {repo_id}", "",
             f"Trained with prefalign from `{base}`: losses {', '.join(losses) or 'n/a'}, "
             f"data `{config.get('data', {}).get('train', 'n/a')}`.", "", "## Load it", "", "```python",
             LOADERS[kind].format(repo=repo_id), "```", "", "## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| trainer.{k} | {v} |" for k, v in settings.items() if v is not None]
    evaluation = _evaluation(run_dir)
    if evaluation:
        lines += ["", "## Evaluation (held-out data, last step)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in evaluation.items()]
    return "\n".join(lines) + "\n"


def _evaluation(run_dir: Path) -> dict:
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
        return {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    if not (run_dir / "metrics.jsonl").exists():
        return {}
    evaluated = [r for r in read_metrics(run_dir) if any(k.startswith("eval/") for k in r)]
    return {k: v for k, v in evaluated[-1].items() if k.startswith("eval/")} if evaluated else {}


def prepare_upload(run_dir: Path, repo_id: str, kind: str | None = None) -> Upload:
    """Write the model card into the folder to publish, and list what would be uploaded."""
    run_dir = Path(run_dir)
    kind = _what(run_dir, kind)
    folder = run_dir / kind
    write_text_atomic(folder / "README.md", model_card(run_dir, repo_id, kind))
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return Upload(folder, repo_id, kind, files)


def push(upload: Upload, private: bool = False, token: str | None = None) -> str:
    """Create the repo if needed and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(upload.repo_id, private=private, exist_ok=True)
    info = api.upload_folder(repo_id=upload.repo_id, folder_path=str(upload.folder),
                             commit_message=f"prefalign: upload {upload.kind}")
    return str(info)
