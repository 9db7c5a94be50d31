"""Merge models parameter by parameter: modules in memory (`merge_modules`) or folders on disk
(`merge_folders`: model folders, run folders, checkpoints, or reward-model folders), written atomically."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from prefalign.atomic_files import replace_dir
from prefalign.merging.layer_scaling import lines_scales
from prefalign.merging.methods import MERGE_METHODS, NEEDS_BASE, PAIRED, MergeSettings

# TIES' disjoint mean already averages the agreeing task vectors, so its weights start at 1, as do preference
# vectors' coefficients (each vector added whole); the others average the models (or their task vectors).
UNIT_WEIGHTS = {"ties", "dare_ties", "preference_vectors"}


@dataclass
class MergeRecipe:
    method: str
    weights: list[float] | None = None  # default: 1/M each, 1 each for the TIES family
    density: float = 1.0
    seed: int = 0
    sign_method: str = "total"
    lines: tuple[float, float] | None = None  # LiNeS (alpha, beta) on the merged task vector
    sources: dict[str, object] = field(default_factory=dict)  # what was merged, recorded in merge.json

    def settings(self, n_models: int) -> MergeSettings:
        if self.method not in MERGE_METHODS:
            raise ValueError(f"unknown merge method {self.method!r}; choose from {', '.join(MERGE_METHODS)}")
        if not 0 < self.density <= 1:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        n = n_models
        if self.method in PAIRED:
            if n_models % 2:
                raise ValueError(f"{self.method}: models come in (plus, minus) pairs; got {n_models} models")
            n = n_models // 2
        weights = self.weights or [1.0 if self.method in UNIT_WEIGHTS else 1.0 / n] * n
        if len(weights) != n:
            unit = "pairs of models" if self.method in PAIRED else "models"
            raise ValueError(f"{len(weights)} weights for {n} {unit}")
        return MergeSettings(torch.tensor(weights, dtype=torch.float32), self.density, self.seed, self.sign_method)

    def needs_base(self) -> bool:
        return self.method in NEEDS_BASE or self.lines is not None


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters lists a tied weight once, so the embedding and the head it is tied to merge as one.
    return dict(model.named_parameters())


def check_same_architecture(models: list[torch.nn.Module], labels: list[str]) -> None:
    """The same parameter names with the same shapes in every model, else a ValueError naming the first
    difference."""
    named = [_parameters(m) for m in models]
    first = named[0]
    for params, label in zip(named[1:], labels[1:]):
        missing = sorted(set(first) ^ set(params))
        if missing:
            raise ValueError(f"{label} does not have the architecture of {labels[0]}: {missing[0]} is in only one")
        bad = next((k for k in first if params[k].shape != first[k].shape), None)
        if bad:
            raise ValueError(f"{label} does not have the architecture of {labels[0]}: {bad} has shape "
                             f"{tuple(params[bad].shape)} there, {tuple(first[bad].shape)} in {labels[0]}")


@torch.no_grad()
def merge_modules(models: list[torch.nn.Module], recipe: MergeRecipe, base: torch.nn.Module | None = None,
                  labels: list[str] | None = None) -> torch.nn.Module:
    """A copy of models[0] whose every parameter is the recipe's merge of the models' (in float32, cast
    back to the parameter's dtype). Buffers are models[0]'s."""
    if not models:
        raise ValueError("merging needs at least one model")
    if recipe.needs_base() and base is None:
        raise ValueError(f"{recipe.method}{' with LiNeS' if recipe.lines else ''} works on task vectors and needs "
                         "the base model they were fine-tuned from")
    labels = labels or [f"model {i}" for i in range(len(models))] + ["base"]
    everything = models + ([base] if base is not None else [])
    check_same_architecture(everything, labels)
    named = [_parameters(m) for m in everything]
    settings = recipe.settings(len(models))
    scales = lines_scales(list(named[0]), *recipe.lines) if recipe.lines else {}
    merged = copy.deepcopy(models[0])
    for i, (name, target) in enumerate(_parameters(merged).items()):
        thetas = torch.stack([params[name].float() for params in named[:len(models)]])
        theta0 = named[-1][name].float() if base is not None else None
        # DARE: one random stream per parameter, all fixed by the recipe's seed
        value = MERGE_METHODS[recipe.method](thetas, theta0, replace(settings, seed=recipe.seed + i))
        if scales:
            value = theta0 + scales[name] * (value - theta0)
        target.copy_(value.to(target.dtype))
    return merged


def _is_reward_model(path: str) -> bool:
    return (Path(path) / "reward_config.json").exists()


def merge_folders(paths: list[str], out: Path, recipe: MergeRecipe, base: str | None = None,
                  trust_remote_code: bool = False, allow_pickle: bool = False) -> Path:
    """Merge policies (model folders, hub ids, run folders, checkpoints; LoRA runs are merged into their
    base first) or reward-model folders (WARM and its relatives) into `out`, with merge.json recording the
    recipe. Nothing is left at `out` if the merge fails."""
    kinds = {_is_reward_model(p) for p in paths + ([base] if base else [])}
    if len(kinds) > 1:
        raise ValueError("merge either reward-model folders or policies, not both")
    recipe.sources = {"models": paths, "base": base}
    if kinds == {True}:
        return _merge_reward_models(paths, out, recipe, base, trust_remote_code)
    from prefalign.models.loading import load_for_inference

    def load(path: str) -> torch.nn.Module:
        return load_for_inference(path, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)

    merged = merge_modules([load(p) for p in paths], recipe, load(base) if base else None, paths + [base or ""])
    tokenizer = _first_tokenizer(paths + ([base] if base else []), trust_remote_code)

    def write(folder: Path) -> None:
        merged.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    return _save_atomic(out, recipe, write)


def _first_tokenizer(paths: list[str], trust_remote_code: bool) -> object:
    """The first model's tokenizer, else the next one's (a bare weights folder has none)."""
    from prefalign.models.loading import inference_tokenizer

    for path in paths:
        try:
            return inference_tokenizer(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError, TypeError):
            continue
    raise ValueError(f"none of {', '.join(paths)} has a tokenizer to save with the merged model")


def _merge_reward_models(paths: list[str], out: Path, recipe: MergeRecipe, base: str | None,
                         trust_remote_code: bool) -> Path:
    from prefalign.rewards.model import load_reward_model

    models = [load_reward_model(p, trust_remote_code=trust_remote_code) for p in paths]
    if any(m.spec != models[0].spec for m in models):
        raise ValueError("the reward models have different specs (kind, objectives or head); merge like with like")
    base_model = load_reward_model(base, trust_remote_code=trust_remote_code) if base else None
    merged = merge_modules(models, recipe, base_model, paths + [base or ""])
    return _save_atomic(out, recipe, merged.save)


def _save_atomic(out: Path, recipe: MergeRecipe, write: Callable[[Path], object]) -> Path:
    """Write into a temporary folder, add merge.json, then move it into place."""
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        (tmp / "merge.json").write_text(json.dumps(asdict(recipe), indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)
    return out
