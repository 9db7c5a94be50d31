"""`prefalign sft`: config -> demonstrations -> policy -> the SFT objective in the shared loop -> outputs.

Demonstrations are SFT data as it is, or the preferred completion of preference data (data/loading.py's
to_demonstrations). With `condition` it is conditional training (Korbak et al. 2023): every completion is
kept, and its prompt ends with a control token saying whether its score reaches the threshold, so that the
model learns p(y | x, good) and p(y | x, bad) and is sampled with the good token."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console

from prefalign.config.schema import ConditionConfig, SFTTrainConfig
from prefalign.data.errors import DataError
from prefalign.data.examples import Demonstration, Text
from prefalign.data.loading import load_examples, to_demonstrations
from prefalign.data.tokenize import CompletionTokenizer, TokenizedCompletion
from prefalign.models.loading import load_policy, load_tokenizer
from prefalign.training.loop import LoopResult
from prefalign.training.preference import (
    PreparedData,
    split_by_row,
    start_run,
    tokenize_all,
    train_and_export,
)
from prefalign.training.sft import SFTObjective, sft_loop_data


@dataclass
class SFTRun:
    run_dir: Path
    loop: LoopResult
    outputs: dict[str, Path]
    data: PreparedData
    threshold: float | None = None  # conditional training's score threshold, as applied
    main: bool = True


def with_control_token(prompt: Text, token: str) -> Text:
    """The prompt ending with `token`: after the text, or after the last message's content."""
    if isinstance(prompt, str):
        return prompt + token
    return [*prompt[:-1], {**prompt[-1], "content": prompt[-1]["content"] + token}]


def condition_threshold(train: list[Demonstration], cfg: ConditionConfig) -> float:
    """The configured threshold, or the training completions' median score; every completion needs a score."""
    missing = next((d for d in train if d.score is None), None)
    if missing is not None:
        raise DataError(missing.ref, "score", "conditional training needs a score for every completion "
                        "(a score field, rated completions, pairs or labels)", "missing_field")
    return cfg.threshold if cfg.threshold is not None else statistics.median(d.score for d in train)


def tag(demos: list[Demonstration], cfg: ConditionConfig, threshold: float) -> list[Demonstration]:
    return [replace(d, prompt=with_control_token(d.prompt, cfg.good_token if d.score >= threshold else cfg.bad_token))
            for d in demos]


def add_control_tokens(tokenizer: object, cfg: ConditionConfig) -> None:
    tokenizer.add_tokens([cfg.good_token, cfg.bad_token], special_tokens=True)


def sft_policy(cfg: SFTTrainConfig, tokenizer: object) -> torch.nn.Module:
    """The policy, its embeddings grown to the tokenizer's control tokens where it lacks them."""
    policy = load_policy(cfg.model)
    if len(tokenizer) > policy.get_input_embeddings().num_embeddings:
        policy.resize_token_embeddings(len(tokenizer))
    return policy


def prepare_demonstrations(cfg: SFTTrainConfig, tokenizer: object) -> tuple[PreparedData, float | None]:
    every = cfg.condition is not None
    loaded = load_examples(cfg.data.train, cfg.data)
    items = to_demonstrations(loaded, every)
    if cfg.data.eval:
        held = to_demonstrations(load_examples(cfg.data.eval, cfg.data), every)
    else:
        items, held = split_by_row(items, cfg.data.eval_fraction, cfg.trainer.seed)
    threshold = None
    if cfg.condition is not None:
        threshold = condition_threshold(items + held, cfg.condition)
        items, held = tag(items, cfg.condition, threshold), tag(held, cfg.condition, threshold)
    tok = CompletionTokenizer(tokenizer, cfg.data.max_length, cfg.data.max_prompt_length, cfg.data.too_long)

    def tokenize(d: Demonstration) -> TokenizedCompletion:
        encoded = tok.encode(d.prompt, d.completion, d.ref)
        prompt_ids, (completion_ids,), _ = tok.fit(encoded.prompt_ids, [encoded.completion_ids], d.ref)
        return TokenizedCompletion(prompt_ids, completion_ids)

    train = tokenize_all(items, tokenize, cfg.data, loaded.tally)
    if not train:
        raise DataError(cfg.data.train, None, "no training examples left after validation", "empty")
    data = PreparedData(train, tokenize_all(held, tokenize, cfg.data, loaded.tally), loaded.tally, loaded.format,
                        tok.boundary_fallbacks, tok.truncated, loaded.format_note)
    return data, threshold


def _toy_data(cfg: SFTTrainConfig, run_dir: Path, processes: object, console: Console) -> SFTTrainConfig:
    """data.train=toy: the quickstart's toy pairs (best and worst of 4 base samples by the gold reward)."""
    from prefalign.toy.preference_data import cached_toy_pairs

    if processes.is_main:
        cached_toy_pairs(run_dir / "data", seed=cfg.trainer.seed, say=lambda s: console.print(s, markup=False))
    processes.barrier()
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"train": str(run_dir / "data" / "toy_pairs.jsonl")})})


def train_sft_run(cfg: SFTTrainConfig, resume: bool = False, console: Console | None = None,
                  on_step: Callable[[int, dict], None] | None = None, overwrite: bool = False) -> SFTRun:
    if cfg.condition is not None and (cfg.model.lora or cfg.model.ia3):
        raise ValueError("condition: conditional training learns the control tokens' new embeddings, which an "
                         "adapter leaves frozen; train the whole model (drop model.lora / model.ia3)")
    cfg, processes, console = start_run(cfg, console, resume, overwrite)
    run_dir = Path(cfg.trainer.output_dir)
    if cfg.data.train == "toy":
        cfg = _toy_data(cfg, run_dir, processes, console)
    tokenizer = load_tokenizer(cfg.model)
    if cfg.condition is not None:
        add_control_tokens(tokenizer, cfg.condition)
    data, threshold = prepare_demonstrations(cfg, tokenizer)
    for line in data.tally.summary_lines():
        console.print(f"data: {line}", markup=False)
    tagged = f"; control tokens by score >= {threshold:g}" if threshold is not None else ""
    console.print(f"data: format {data.format} read as demonstrations: {len(data.train)} for training, "
                  f"{len(data.eval)} held out; {data.truncated} truncated to {cfg.data.max_length} tokens{tagged}")
    policy = sft_policy(cfg, tokenizer).to(processes.device)
    loop_data = sft_loop_data(data.train, data.eval, tokenizer.pad_token_id, cfg.trainer.eval_batch_size)
    result, outputs = train_and_export(policy, tokenizer, SFTObjective(), loop_data, cfg, processes, resume, console,
                                       on_step, build=lambda: sft_policy(cfg, tokenizer))
    return SFTRun(run_dir, result, outputs, data, threshold, processes.is_main)
