"""Speculative sampling: a small draft model proposes `k` tokens, the policy checks them in one forward pass.

Leviathan et al. 2023 ("Fast Inference from Transformers via Speculative Decoding") and Chen et al. 2023
("Accelerating Large Language Model Decoding with Speculative Sampling"). With target distribution p and draft
distribution q at a position, the draft token x ~ q is kept with probability min(1, p(x) / q(x)); at the first
rejection the token is drawn from the residual norm(max(0, p - q)) instead, and when all k are kept one more
comes from p. Each emitted token is then distributed exactly as p given the tokens before it:

    P(out = x) = q(x) min(1, p(x)/q(x)) + (1 - sum_y min(q(y), p(y))) norm(max(0, p - q))(x) = p(x).

transformers' assisted generation does this for one prompt at a time. Here a whole batch advances together,
each row keeping its own number of drafts: every round appends the k draft columns and the next token's column
to the batch, and the drafts a row rejected stay in both KV caches but are masked out of attention (positions
count only the unmasked tokens). The batch stays rectangular and nothing is recomputed or cropped, at the cost
of cache columns that hold rejected drafts. Temperature 0 is greedy: p and q become one-hot and the output is
the policy's own greedy decoding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from prefalign.decoding.guidance import cache_keyword
from prefalign.decoding.sampling import Sample, completion, left_pad, own_rng


@dataclass
class SpeculativeStats:
    rounds: int = 0  # target forward passes
    drafted: int = 0  # draft tokens proposed to rows still generating
    accepted: int = 0  # of them, the ones the row's own test kept (before the batch's shortest run cut it)
    emitted: int = 0  # tokens committed to rows still generating

    @property
    def acceptance(self) -> float:
        return self.accepted / max(self.drafted, 1)


def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax at `temperature`; at 0 the one-hot of the argmax (greedy decoding as a distribution)."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(torch.float32)
    return torch.softmax(logits.float() / temperature, dim=-1)


def verify(p: torch.Tensor, q: torch.Tensor, drafts: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """How many leading drafts each row keeps: drafts[b, j] is kept while uniforms[b, j] < p(x) / q(x).
    p: [B, k+1, V] target probabilities, q: [B, k, V] draft probabilities, drafts and uniforms: [B, k]."""
    k = drafts.shape[1]
    p_x = p[:, :k].gather(-1, drafts[..., None])[..., 0]
    q_x = q.gather(-1, drafts[..., None])[..., 0]
    kept = uniforms * q_x < p_x  # u < p/q without dividing by a q that can underflow to 0
    return kept.long().cumprod(dim=1).sum(dim=1)


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): where to draw after a rejection. Where p <= q everywhere (p == q up to rounding;
    a rejection then has probability ~0) it falls back to p."""
    r = (p - q).clamp(min=0)
    total = r.sum(-1, keepdim=True)
    return torch.where(total > 1e-12, r / total.clamp(min=1e-30), p)


def _draw(probs: torch.Tensor) -> torch.Tensor:
    return torch.multinomial(probs, 1)[:, 0]


class _CachedModel:
    """A model with a KV cache over the first `length` columns of the batch being decoded; each call feeds
    the columns not yet cached. Columns that a row rejected stay in the cache, masked out by the attention mask
    (so rows can keep different numbers of tokens in one rectangular batch, and nothing is ever cropped)."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model, self.cache, self.length = model, DynamicCache(), 0
        self.cache_name = cache_keyword(model)

    def logits(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Logits after each column from `length` to the end; the cache then covers every column."""
        positions = (attn.cumsum(-1) - 1).clamp(min=0)  # real tokens numbered 0, 1, ... skipping masked columns
        out = self.model(input_ids=ids[:, self.length:], attention_mask=attn, position_ids=positions[:, self.length:],
                         use_cache=True, **{self.cache_name: self.cache})
        self.length = ids.shape[1]
        return out.logits


def _propose(draft: _CachedModel, ids: torch.Tensor, attn: torch.Tensor, k: int,
             temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """k draft tokens per row and the draft's distributions they were drawn from: ([B, k], [B, k, V])."""
    tokens, dists = [], []
    for _ in range(k):
        q = probabilities(draft.logits(ids, attn)[:, -1], temperature)
        x = _draw(q)
        tokens.append(x)
        dists.append(q)
        ids = torch.cat([ids, x[:, None]], dim=1)
        attn = torch.cat([attn, attn.new_ones(len(x), 1)], dim=1)
    return torch.stack(tokens, 1), torch.stack(dists, 1)


def next_token(p: torch.Tensor, q: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Each row's token after its kept drafts: from the residual at its first rejection, from p past the
    last draft when it kept all k."""
    rows = torch.arange(len(kept), device=kept.device)
    p_at = p[rows, kept]
    q_at = q[rows, kept.clamp(max=q.shape[1] - 1)]
    return _draw(torch.where((kept == q.shape[1])[:, None], p_at, residual(p_at, q_at)))


@torch.no_grad()
def speculative_ids(target: PreTrainedModel, draft: PreTrainedModel, ids: torch.Tensor, attn: torch.Tensor,
                    eos_id: int, max_new_tokens: int, k: int = 4,
                    temperature: float = 1.0) -> tuple[list[list[int]], SpeculativeStats]:
    """Up to `max_new_tokens` new tokens per row of the left-padded batch `ids` (cut after EOS), distributed
    as sampling from `target` alone would be."""
    big, small = _CachedModel(target), _CachedModel(draft)
    out: list[list[int]] = [[] for _ in range(len(ids))]
    live, stats = torch.ones(len(ids), dtype=torch.bool), SpeculativeStats()
    while bool(live.any()):
        drafts, q = _propose(small, ids, attn, k, temperature)
        attn = torch.cat([attn, attn.new_ones(drafts.shape)], dim=1)
        p = probabilities(big.logits(torch.cat([ids, drafts], dim=1), attn)[:, -(k + 1):], temperature)
        kept = verify(p, q, drafts, torch.rand(drafts.shape, device=ids.device))
        last = next_token(p, q, kept)
        attn[:, -k:] = (torch.arange(k, device=ids.device) < kept[:, None]).long()  # rejected drafts masked out
        ids = torch.cat([ids, drafts, last[:, None]], dim=1)
        attn = torch.cat([attn, attn.new_ones(len(ids), 1)], dim=1)
        stats.rounds += 1
        for b in live.nonzero()[:, 0].tolist():
            a = int(kept[b])
            stats.drafted, stats.accepted, stats.emitted = stats.drafted + k, stats.accepted + a, stats.emitted + a + 1
            out[b] += drafts[b, :a].tolist() + [int(last[b])]
            if eos_id in out[b] or len(out[b]) >= max_new_tokens:
                live[b] = False
    return [row[:max_new_tokens] for row in out], stats


def load_draft(path: str, tokenizer: object, device: torch.device | str = "cpu", trust_remote_code: bool = False,
               allow_pickle: bool = False) -> PreTrainedModel:
    """A draft model (model, run or checkpoint folder) for speculative sampling, refused unless its tokenizer is
    the policy's; eval mode on `device`."""
    from prefalign.models.loading import inference_tokenizer, load_for_inference

    if inference_tokenizer(path, trust_remote_code).get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"draft: {path} has a tokenizer other than the policy's; speculative sampling needs the "
                         "same vocabulary")
    return load_for_inference(path, trust_remote_code, allow_pickle).to(device).eval()


def speculative_generate(target: PreTrainedModel, draft: PreTrainedModel, tokenizer: object, prompts: list[str],
                         max_new_tokens: int = 48, k: int = 4, temperature: float = 1.0,
                         seed: int = 0) -> tuple[list[Sample], SpeculativeStats]:
    """One completion per prompt, as one batch, drawn from `target` with `draft` proposing; the draft must
    share the tokenizer. Samples are cut after EOS and at `max_new_tokens`, like `sampling.generate`."""
    if draft.config.vocab_size != target.config.vocab_size:
        raise ValueError(f"the draft's vocabulary ({draft.config.vocab_size}) differs from the policy's "
                         f"({target.config.vocab_size}); speculative sampling needs one tokenizer")
    modes = target.training, draft.training
    target.eval(), draft.eval()
    device = next(target.parameters()).device
    encoded, ids, attn = left_pad(tokenizer, prompts)
    with own_rng(seed, device):
        rows, stats = speculative_ids(target, draft, ids.to(device), attn.to(device), tokenizer.eos_token_id,
                                      max_new_tokens, k, temperature)
    target.train(modes[0]), draft.train(modes[1])
    return [completion(tokenizer, p, encoded[i], rows[i]) for i, p in enumerate(prompts)], stats
