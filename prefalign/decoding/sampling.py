"""Batched generation from a causal LM, returning prompt and completion token ids.

Sampling is plain: temperature only, no top-k/top-p unless asked, so that samples come from the model's own
distribution (which the KL estimate in evaluation relies on). `generate` is the one place prompts are
left-padded and completions cut at EOS; decoding strategies pass their logits processors through it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, PreTrainedModel

from prefalign.data.examples import Text
from prefalign.data.tokenize import CompletionTokenizer


@dataclass(frozen=True)
class Sample:
    prompt: str
    prompt_ids: list[int]
    completion_ids: list[int]  # up to and including EOS when the model emitted it
    text: str


@contextmanager
def own_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Draws inside come from their own stream, seeded by `seed`; the caller's RNG (the CPU's, and the
    model's GPU's) is left as it was, so sampling neither consumes nor depends on a training run's RNG."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def left_pad_ids(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows left-padded into a batch (every row continues from its own last token), and the mask."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        attn[i, width - len(r):] = 1
    return ids, attn


def left_pad(tokenizer: object, prompts: list[str]) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Token ids of each prompt, and the batch left-padded."""
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    return encoded, *left_pad_ids(encoded, tokenizer.pad_token_id)


def completion(tokenizer: object, prompt: str, prompt_ids: list[int], new: list[int]) -> Sample:
    eos = tokenizer.eos_token_id
    if eos in new:
        new = new[: new.index(eos) + 1]
    elif tokenizer.pad_token_id in new:  # a row that stopped early in a batch is padded on the right
        new = new[: new.index(tokenizer.pad_token_id)]
    return Sample(prompt, prompt_ids, new, tokenizer.decode(new, skip_special_tokens=True))


@torch.no_grad()
def generate(model: PreTrainedModel, tokenizer: object, prompts: list[str], max_new_tokens: int = 48,
             do_sample: bool = True, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             logits_processor: list[LogitsProcessor] | None = None, use_cache: bool = True,
             draft: PreTrainedModel | None = None, draft_tokens: int = 4, **generate_kwargs: object) -> list[Sample]:
    """One completion per prompt, as one batch; `generate_kwargs` go to `model.generate` as they are. With a
    `draft` model the same distribution is drawn by speculative sampling (decoding/speculative.py)."""
    if draft is not None:
        return _speculative(model, draft, tokenizer, prompts, max_new_tokens, do_sample, temperature, top_p, seed,
                            draft_tokens, logits_processor, generate_kwargs)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded, ids, attn = left_pad(tokenizer, prompts)
    for p in logits_processor or []:
        getattr(p, "reset", lambda: None)()
    options = dict(do_sample=True, temperature=temperature, top_k=0, top_p=top_p) if do_sample else dict(do_sample=False)
    with own_rng(seed, device):
        gen = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), max_new_tokens=max_new_tokens,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                             logits_processor=logits_processor, use_cache=use_cache, **options, **generate_kwargs)
    model.train(was_training)
    width = ids.shape[1]
    return [completion(tokenizer, p, encoded[i], gen[i, width:].tolist()) for i, p in enumerate(prompts)]


def _speculative(model: PreTrainedModel, draft: PreTrainedModel, tokenizer: object, prompts: list[str],
                 max_new_tokens: int, do_sample: bool, temperature: float, top_p: float, seed: int, draft_tokens: int,
                 logits_processor: list[LogitsProcessor] | None, generate_kwargs: dict) -> list[Sample]:
    from prefalign.decoding.speculative import speculative_generate

    if logits_processor or generate_kwargs or top_p < 1.0:
        raise ValueError("a draft model (speculative sampling) draws from the policy's own distribution: it does "
                         "not combine with top-p, logits processors or other generate options")
    return speculative_generate(model, draft, tokenizer, prompts, max_new_tokens, draft_tokens,
                                temperature if do_sample else 0.0, seed)[0]


def sample(model: PreTrainedModel, tokenizer: object, prompts: list[str], n: int = 1, max_new_tokens: int = 48,
           temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 64, seed: int = 0,
           draft: PreTrainedModel | None = None, draft_tokens: int = 4) -> list[list[Sample]]:
    """`n` samples for each prompt; result[i][j] is the j-th sample of prompts[i]. Seeded and reproducible."""
    flat = [p for p in prompts for _ in range(n)]
    out: list[Sample] = []
    for start in range(0, len(flat), batch_size):
        out += generate(model, tokenizer, flat[start:start + batch_size], max_new_tokens, temperature=temperature,
                        top_p=top_p, seed=seed * 7919 + start, draft=draft, draft_tokens=draft_tokens)
    return [out[i * n:(i + 1) * n] for i in range(len(prompts))]


@torch.no_grad()
def continue_ids(model: PreTrainedModel, rows: list[list[int]], pad_id: int, eos_id: int, max_new_tokens: int,
                 do_sample: bool = True, seed: int = 0, stop_ids: tuple[int, ...] = (),
                 temperature: float = 1.0) -> list[list[int]]:
    """Continue token sequences (not strings) by up to `max_new_tokens`, as one batch; each continuation is
    cut after EOS or after the first of `stop_ids` (a block boundary such as a full stop). For strategies that
    extend partial completions block by block."""
    ids, attn = left_pad_ids(rows, pad_id)
    width = ids.shape[1]
    options = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if do_sample else dict(do_sample=False)
    device = next(model.parameters()).device
    with own_rng(seed, device):
        gen = model.eval().generate(input_ids=ids.to(device), attention_mask=attn.to(device),
                                    max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                    eos_token_id=[eos_id, *stop_ids], **options)[:, width:].tolist()
    out = []
    for new in gen:
        ends = [j for j, t in enumerate(new) if t == eos_id or t in stop_ids]
        if ends:
            new = new[: ends[0] + 1]
        elif pad_id in new:
            new = new[: new.index(pad_id)]
        out.append(new)
    return out


def complete_prompts(model: PreTrainedModel, tokenizer: object, prompts: list[Text], max_new_tokens: int = 128,
                     temperature: float = 1.0, seed: int = 0) -> list[str]:
    """One completion per prompt (text, or messages put through the chat template with its generation
    prompt), each prompt tokenized exactly as training tokenizes it; temperature 0 is greedy."""
    encoder = CompletionTokenizer(tokenizer, max_length=10**9)
    new = continue_ids(model, [encoder.prompt_ids(p) for p in prompts], tokenizer.pad_token_id,
                       tokenizer.eos_token_id, max_new_tokens, do_sample=temperature > 0, seed=seed,
                       temperature=temperature or 1.0)
    return [tokenizer.decode(ids, skip_special_tokens=True) for ids in new]
