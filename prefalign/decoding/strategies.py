"""Every decoding strategy behind one call: `decode(name, setup, prompts) -> Decoded`.

`DecodeSetup` holds what strategies draw on: the policy and its tokenizer, a text scorer (gold reward or
reward model by text), a token-level reward model (`PrefixScorer`, for cached ARGS), value models with
their weights (CD, VAS), a baseline model for Transfer Q*, and the knobs. Each strategy returns the chosen
completion per prompt and the number of tokens it drew in total (rewound and rejected ones included)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from prefalign.decoding.best_of_n import best_of_n, rejection_sample
from prefalign.decoding.blockwise import BlockScore, blockwise_decode, text_block_score, value_block_score
from prefalign.decoding.guidance import Guide, GuidedLogits, ModelGuide, PrefixScorer, TextGuide, TextScore
from prefalign.decoding.rain import rain_decode
from prefalign.decoding.sampling import Sample, generate, left_pad_ids, sample
from prefalign.decoding.self_consistency import (
    decided,
    first_number,
    majority_vote,
    soft_vote,
    universal_consistency,
)
from prefalign.decoding.transfer_q import TransferQGuide


@dataclass
class DecodeSetup:
    model: torch.nn.Module
    tokenizer: object
    score: TextScore | None = None  # text scorer: best-of-N, rejection, ARGS without a token model, RAIN, CD-block
    reward_model: PrefixScorer | None = None  # token-level scorer sharing the tokenizer: cached ARGS
    values: list[tuple[PrefixScorer, float]] = field(default_factory=list)  # (value model, weight): CD, VAS
    baseline: torch.nn.Module | None = None  # Transfer Q*: rolls out continuations
    baseline_score: TextScore | None = None  # Transfer Q* indirect: the baseline's own reward
    draft: torch.nn.Module | None = None  # speculative sampling's draft model, for strategies that draw plain samples
    draft_tokens: int = 4  # tokens the draft proposes per policy forward pass
    k: int = 10  # top-k candidates (ARGS, CD, VAS, TQ*), samples (best-of-N, self-consistency), blocks (CD-block)
    weight: float = 1.0  # ARGS's w, TQ*'s alpha
    block: int = 8
    horizon: int = 16
    rollouts: int = 1
    beta: float = 1.0
    guidance_scale: float = 1.5
    negative_prompt: str = ""
    threshold: float = 1.0
    confidence: float = 0.95  # Adaptive-Consistency's stopping confidence
    greedy: bool = False
    cache: bool = True
    max_new_tokens: int = 48
    seed: int = 0
    answer: Callable[[str], str | None] = first_number


@dataclass
class Decoded:
    samples: list[Sample]
    tokens_drawn: int


def _drawn(samples: list[Sample]) -> int:
    return sum(len(s.completion_ids) for s in samples)


def _need(value: object, what: str, strategy: str) -> None:
    if value is None or value == []:
        raise ValueError(f"strategy {strategy!r} needs {what}")


def _guided(setup: DecodeSetup, prompts: list[str], guides: list[Guide], centre: bool = False,
            greedy: bool | None = None) -> Decoded:
    processor = GuidedLogits(guides, setup.k, centre)
    out = generate(setup.model, setup.tokenizer, prompts, setup.max_new_tokens,
                   do_sample=not (setup.greedy if greedy is None else greedy), seed=setup.seed,
                   logits_processor=[processor], use_cache=setup.cache)
    return Decoded(out, _drawn(out))


def _block_score(setup: DecodeSetup, prompts: list[str], strategy: str, value_first: bool) -> BlockScore:
    """CD-block judges blocks by its value model when it has one; RAIN by the text scorer when it has one."""
    value = setup.values and (value_first or setup.score is None)
    if value:
        return value_block_score(setup.values[0][0], setup.tokenizer.pad_token_id)
    _need(setup.score, "a scorer or a value model", strategy)
    return text_block_score(setup.score, setup.tokenizer, prompts)


def plain(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    out = generate(setup.model, setup.tokenizer, prompts, setup.max_new_tokens, do_sample=not setup.greedy,
                   seed=setup.seed, use_cache=setup.cache, draft=setup.draft, draft_tokens=setup.draft_tokens)
    return Decoded(out, _drawn(out))


def best_of_n_strategy(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    _need(setup.score, "a scorer", "best-of-n")
    out, drawn = best_of_n(setup.model, setup.tokenizer, prompts, setup.score, setup.k, setup.max_new_tokens, setup.seed,
                           setup.draft, setup.draft_tokens)
    return Decoded(out, drawn)


def rejection(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    _need(setup.score, "a scorer", "rejection")
    out, drawn = rejection_sample(setup.model, setup.tokenizer, prompts, setup.score, setup.threshold, setup.k,
                                  setup.max_new_tokens, setup.seed, setup.draft, setup.draft_tokens)
    return Decoded(out, drawn)


def args(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    if setup.reward_model is not None:
        guide = ModelGuide(setup.reward_model, setup.tokenizer.pad_token_id, cache=setup.cache)
    else:
        _need(setup.score, "a reward model or a scorer", "args")
        guide = TextGuide(setup.score, setup.tokenizer, prompts)
    return _guided(setup, prompts, [Guide(guide, setup.weight)])


def _value_guides(setup: DecodeSetup, strategy: str) -> list[Guide]:
    _need(setup.values, "value models (--value)", strategy)
    return [Guide(ModelGuide(v, setup.tokenizer.pad_token_id, cache=setup.cache), w) for v, w in setup.values]


def cd_token(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    return _guided(setup, prompts, _value_guides(setup, "cd-token"))


def vas(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    return _guided(setup, prompts, _value_guides(setup, "vas"), centre=True)


def cd_block(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    out, drawn = blockwise_decode(setup.model, setup.tokenizer, prompts, _block_score(setup, prompts, "cd-block", value_first=True),
                                  setup.k, setup.block, setup.max_new_tokens, setup.seed)
    return Decoded(out, drawn)


def transfer_q(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    _need(setup.baseline, "a baseline model (--baseline)", "transfer-q")
    _need(setup.score, "a target reward", "transfer-q")
    guide = TransferQGuide(setup.baseline, setup.tokenizer, prompts, setup.score, setup.horizon, setup.rollouts,
                           setup.baseline_score, setup.beta, setup.seed)
    out = _guided(setup, prompts, [Guide(guide, setup.weight)])
    return Decoded(out.samples, out.tokens_drawn + guide.tokens_drawn)


def cfg(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    """Classifier-free guidance (Sanchez et al. 2023, "Stay on topic with Classifier-Free Guidance"):
    logits = uncond + gamma (cond - uncond), the unconditional pass seeing `negative_prompt` (empty: the BOS
    alone). transformers implements it; we pass the negative prompt per row."""
    neg_ids, neg_mask = left_pad_ids([setup.tokenizer(setup.negative_prompt)["input_ids"]] * len(prompts),
                                     setup.tokenizer.pad_token_id)
    out = generate(setup.model, setup.tokenizer, prompts, setup.max_new_tokens, do_sample=not setup.greedy,
                   seed=setup.seed, guidance_scale=setup.guidance_scale, negative_prompt_ids=neg_ids,
                   negative_prompt_attention_mask=neg_mask)
    return Decoded(out, _drawn(out))


def rain(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    result = rain_decode(setup.model, setup.tokenizer, prompts, _block_score(setup, prompts, "rain", value_first=False), 2 * setup.block,
                         max_rewinds=4, max_new_tokens=setup.max_new_tokens, seed=setup.seed)
    return Decoded(result.samples, result.tokens_drawn)


def _pick(group: list[Sample], answer: str | None, extract: Callable[[str], str | None]) -> Sample:
    return next((s for s in group if extract(s.text) == answer), group[0])


def _k_samples(setup: DecodeSetup, prompts: list[str]) -> list[list[Sample]]:
    return sample(setup.model, setup.tokenizer, prompts, n=setup.k, max_new_tokens=setup.max_new_tokens, seed=setup.seed,
                  draft=setup.draft, draft_tokens=setup.draft_tokens)


def self_consistency(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    groups = _k_samples(setup, prompts)
    out = [_pick(g, majority_vote([setup.answer(s.text) for s in g]), setup.answer) for g in groups]
    return Decoded(out, sum(_drawn(g) for g in groups))


def adaptive(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    """Adaptive-Consistency: one more sample per undecided prompt per round (batched), up to k."""
    drawn: list[list[Sample]] = [[] for _ in prompts]
    todo = list(range(len(prompts)))
    for r in range(setup.k):
        if not todo:
            break
        for i, g in zip(todo, sample(setup.model, setup.tokenizer, [prompts[i] for i in todo],
                                     max_new_tokens=setup.max_new_tokens, seed=setup.seed * 1000 + r,
                                     draft=setup.draft, draft_tokens=setup.draft_tokens)):
            drawn[i].append(g[0])
        todo = [i for i in todo if not decided([setup.answer(s.text) for s in drawn[i]], setup.confidence)]
    out = [_pick(g, majority_vote([setup.answer(s.text) for s in g]), setup.answer) for g in drawn]
    return Decoded(out, sum(_drawn(g) for g in drawn))


@torch.no_grad()
def soft_self_consistency(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    from prefalign.evaluation.policy_eval import completion_logps

    groups = _k_samples(setup, prompts)
    flat = [s for g in groups for s in g]
    logps = completion_logps(setup.model, flat, setup.tokenizer.pad_token_id)
    probs = [float(torch.exp(lp / max(len(s.completion_ids), 1))) for lp, s in zip(logps, flat)]
    out = []
    for i, g in enumerate(groups):
        answers = [setup.answer(s.text) for s in g]
        out.append(_pick(g, soft_vote(answers, probs[i * setup.k:(i + 1) * setup.k]), setup.answer))
    return Decoded(out, _drawn(flat))


def universal(setup: DecodeSetup, prompts: list[str]) -> Decoded:
    groups = _k_samples(setup, prompts)
    return Decoded([g[universal_consistency([s.text for s in g])] for g in groups], sum(_drawn(g) for g in groups))


STRATEGIES: dict[str, Callable[[DecodeSetup, list[str]], Decoded]] = {
    "sample": plain, "best-of-n": best_of_n_strategy, "rejection": rejection, "args": args, "cd-token": cd_token,
    "cd-block": cd_block, "vas": vas, "transfer-q": transfer_q, "cfg": cfg, "rain": rain,
    "self-consistency": self_consistency, "adaptive-consistency": adaptive, "soft-consistency": soft_self_consistency,
    "universal-consistency": universal,
}


# the strategies whose every draw is a plain sample of the policy, which a draft model can speed up unchanged
SPECULATIVE = ("sample", "best-of-n", "rejection", "self-consistency", "adaptive-consistency", "soft-consistency",
               "universal-consistency")


def decode(strategy: str, setup: DecodeSetup, prompts: list[str]) -> Decoded:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if setup.draft is not None and strategy not in SPECULATIVE:
        raise ValueError(f"a draft model (speculative sampling) speeds up plain sampling only ({', '.join(SPECULATIVE)});"
                         f" {strategy!r} reshapes the policy's distribution")
    return STRATEGIES[strategy](setup, prompts)
