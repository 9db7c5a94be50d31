"""YAML files and `key.path=value` overrides into a validated TrainConfig, with did-you-mean errors."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from prefalign.config.schema import TrainConfig


class ConfigError(ValueError):
    """A configuration problem, worded for the user (names the key and where it came from)."""


def parse_overrides(overrides: list[str]) -> dict:
    """`["trainer.lr=1e-6", "loss.0.beta=0.2"]` -> a nested dict. Values are parsed as YAML scalars/lists."""
    tree: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return tree


def _merge(base: Any, patch: Any) -> Any:
    """Deep-merge `patch` into `base`. Integer keys in `patch` index into lists (loss.0.beta=...)."""
    if isinstance(patch, dict) and isinstance(base, list):
        merged = list(base)
        for k, v in patch.items():
            if not str(k).isdigit() or int(k) >= len(merged):
                raise ConfigError(f"list index {k!r} out of range (the list has {len(merged)} items)")
            merged[int(k)] = _merge(merged[int(k)], v)
        return merged
    if isinstance(patch, dict) and isinstance(base, dict):
        merged = dict(base)
        for k, v in patch.items():
            merged[k] = _merge(base[k], v) if k in base else v
        return merged
    return patch


def _unwrap(annotation: Any) -> list[Any]:
    """The BaseModel classes an annotation can hold (through Optional, list, Union)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple):
        return [m for arg in typing.get_args(annotation) for m in _unwrap(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        candidates = _unwrap(model.model_fields[part].annotation)
        model = candidates[0] if candidates else None
    return model


# What TRL's and transformers' configs call our keys: an unknown key that is one of these gets the answer.
ALIASES = {"learning_rate": "trainer.lr", "per_device_train_batch_size": "trainer.batch_size",
           "num_train_epochs": "trainer.epochs", "gradient_accumulation_steps": "trainer.grad_accum",
           "max_steps": "trainer.max_steps", "warmup_steps": "trainer.warmup_steps",
           "warmup_ratio": "trainer.warmup_ratio", "weight_decay": "trainer.weight_decay",
           "lr_scheduler_type": "trainer.schedule", "max_grad_norm": "trainer.max_grad_norm",
           "logging_steps": "trainer.log_every", "save_steps": "trainer.save_every", "eval_steps": "trainer.eval_every",
           "save_total_limit": "trainer.keep_last", "per_device_eval_batch_size": "trainer.eval_batch_size",
           "output_dir": "trainer.output_dir", "seed": "trainer.seed", "adam_epsilon": "trainer.adam_eps",
           "adam_beta1": "trainer.adam_betas", "adam_beta2": "trainer.adam_betas", "beta": "loss.0.beta",
           "loss_type": "loss.0.name", "max_length": "data.max_length", "max_prompt_length": "data.max_prompt_length",
           "model_name_or_path": "model.name_or_path", "gradient_checkpointing": "model.gradient_checkpointing",
           "bf16": "engine.autocast (bf16)", "report_to": "trainer.sinks", "lr": "trainer.lr",
           "batch_size": "trainer.batch_size", "epochs": "trainer.epochs"}


def _unknown_key(loc: tuple, key: str, schema: type[BaseModel]) -> str:
    parent = _model_at(schema, loc[:-1])
    valid = sorted(parent.model_fields) if parent else []
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
    alias = ALIASES.get(str(loc[-1]))
    if alias and alias.split(" ")[0] != key:
        hint = f"; TRL and transformers call it that, here it is {alias}"
    elif close:
        hint = f"; did you mean {'.'.join(str(p) for p in loc[:-1] + (close[0],))!r}?"
    else:
        hint = ""
    return f"unknown key {key!r}{hint} (valid here: {', '.join(valid)})"


def _explain(error: ValidationError, origin: str, schema: type[BaseModel] = TrainConfig) -> str:
    lines = []
    for err in error.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            lines.append(_unknown_key(loc, key, schema))
        else:
            lines.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid configuration from {origin}:\n  " + "\n  ".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type[BaseModel] = TrainConfig, options: dict[str, Any] | None = None) -> BaseModel:
    """Read a YAML config (optional), apply overrides, then `options` (top-level keys a command takes as its
    own flags), and validate against `schema` (default TrainConfig). Raises ConfigError with readable text."""
    data: dict = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
    if overrides:
        origin += " + command-line overrides"
        # Overrides patch the full tree (defaults under the file) so that `loss.0.beta=...` has a list to index.
        data = _merge(_merge(schema().model_dump(), data), parse_overrides(overrides))
    if options:
        origin += " + command-line options"
        data = {**data, **options}
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origin, schema)) from None
