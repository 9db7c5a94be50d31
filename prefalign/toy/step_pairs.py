"""Step-DPO pairs from a policy's own samples on the toy task (Lai et al. 2024's pipeline, the gold reward as
the step verifier).

    prefalign toy make-step-pairs --out runs/toy-steps [--prompts 600]

A response's steps are its sentences. A step's value is what it adds to the gold reward of the answer so far,
    v_j = r*(prompt, steps[:j+1]) - r*(prompt, steps[:j])        (the empty answer counting 0)
so on arithmetic the first step is the answer and its value is the verifier's (+1.7 when right, -0.3 per unit of
error), a repeated sentence costs 0.5, and a negative word or another item lowers a review. In each sampled
response the first step of negative value is the rejected step; from the accepted steps before it the policy
samples `alternatives` next steps (one sentence each) and the best of them, if its value is at least 0 and
above the rejected step's, is the chosen one (Step-DPO's self-generated correction). Rows are written in
Step-DPO's format (`data.format: step`): prompt, initial_reason_steps, chosen, rejected, and both values."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from prefalign.atomic_files import write_text_atomic
from prefalign.decoding.sampling import Sample, continue_ids, sample
from prefalign.models.loading import inference_tokenizer, load_for_inference
from prefalign.toy.gold_reward import gold_reward
from prefalign.toy.world import split_prompts


def split_steps(text: str) -> list[str]:
    """A toy answer's sentences, each as it reads inside the answer: " <words> ." """
    return [f" {s.strip()} ." for s in text.split(" .") if s.strip()]


def step_values(prompt: str, steps: list[str]) -> list[float]:
    """v_j: what step j adds to the gold reward of the answer so far (the empty answer scoring 0)."""
    values, before = [], 0.0
    for j in range(len(steps)):
        after = gold_reward(prompt, "".join(steps[: j + 1]))
        values.append(after - before)
        before = after
    return values


@dataclass(frozen=True)
class StepError:
    prompt: str
    accepted: list[str]  # the steps before the first negative one
    rejected: str
    value: float


def first_error(prompt: str, text: str) -> StepError | None:
    steps = split_steps(text)
    for j, v in enumerate(step_values(prompt, steps)):
        if v < 0:
            return StepError(prompt, steps[:j], steps[j], v)
    return None


def _next_steps(model: torch.nn.Module, tokenizer: object, errors: list[StepError], alternatives: int,
                seed: int) -> list[list[str]]:
    """`alternatives` sampled next sentences after each error's accepted steps ("" where the policy stopped)."""
    full_stop = tokenizer.convert_tokens_to_ids(".")
    rows = [tokenizer(e.prompt + "".join(e.accepted))["input_ids"] for e in errors for _ in range(alternatives)]
    new = continue_ids(model, rows, tokenizer.pad_token_id, tokenizer.eos_token_id, 24, seed=seed,
                       stop_ids=(full_stop,))
    texts = [tokenizer.decode(ids, skip_special_tokens=True).strip() if ids and ids[-1] == full_stop else ""
             for ids in new]
    return [[f" {t}" if t else "" for t in texts[i * alternatives:(i + 1) * alternatives]] for i in range(len(errors))]


def step_pair(error: StepError, candidates: list[str]) -> dict | None:
    """The Step-DPO row for one error: the best candidate step of value >= 0 above the rejected one's."""
    before = gold_reward(error.prompt, "".join(error.accepted)) if error.accepted else 0.0
    scored = [(gold_reward(error.prompt, "".join(error.accepted) + c) - before, c) for c in candidates
              if c and c != error.rejected]
    if not scored:
        return None
    value, chosen = max(scored, key=lambda x: x[0])
    if value < 0 or value <= error.value:
        return None
    return {"prompt": error.prompt, "initial_reason_steps": "".join(error.accepted), "chosen": chosen,
            "rejected": error.rejected, "value_chosen": value, "value_rejected": error.value}


def step_pairs_from_samples(model: torch.nn.Module, tokenizer: object, drawn: list[list[Sample]],
                            alternatives: int = 4, seed: int = 0, batch: int = 256) -> list[dict]:
    """Step-DPO rows from sampled answers (drawn[i]: the samples of one prompt); at most one per prompt and
    accepted prefix, so a prompt's pairs are distinct."""
    errors, seen = [], set()
    for group in drawn:
        for s in group:
            e = first_error(s.prompt, s.text)
            if e is not None and (e.prompt, tuple(e.accepted)) not in seen:
                seen.add((e.prompt, tuple(e.accepted)))
                errors.append(e)
    rows = []
    for start in range(0, len(errors), batch):
        chunk = errors[start:start + batch]
        for e, candidates in zip(chunk, _next_steps(model, tokenizer, chunk, alternatives, seed + start)):
            row = step_pair(e, candidates)
            if row is not None:
                rows.append(row)
    return rows


def write_toy_step_pairs(out_dir: Path, model: str = "toy", n_prompts: int = 600, n_samples: int = 4,
                         alternatives: int = 4, seed: int = 0) -> Path:
    """out_dir/step_pairs.jsonl from `model`'s samples on `n_prompts` training prompts of the toy world."""
    policy, tokenizer = load_for_inference(model), inference_tokenizer(model)
    prompts = random.Random(seed).sample(split_prompts()[0], n_prompts)
    drawn = sample(policy, tokenizer, prompts, n=n_samples, seed=seed)
    rows = step_pairs_from_samples(policy, tokenizer, drawn, alternatives, seed)
    if not rows:
        raise ValueError(f"{model}: no step pairs in {n_prompts} prompts x {n_samples} samples (no sample had a "
                         "step that lowers the gold reward with a better replacement)")
    path = Path(out_dir) / "step_pairs.jsonl"
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path
