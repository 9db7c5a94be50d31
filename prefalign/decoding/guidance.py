"""Token-level guidance at decoding time, as a transformers `LogitsProcessor`.

At each step the policy's top-k next tokens z are scored by one or more guides and the logits become

    logit'(z) = logit(z) + sum_g w_g * s_g(prefix + z)     for z in the top k,   -inf elsewhere

which is, by choice of guide,
- ARGS (Khanov et al. 2024, "ARGS: Alignment as Reward-Guided Search"): s = a reward model's score of the
  extended prefix; greedy or sampled over the top k.
- Controlled Decoding, tokenwise (Mudgal et al. 2024): s = a prefix value function V (CD-FUDGE), and
  pi(z) ∝ pi_ref(z) exp(lambda V(prefix + z)) over the top k (the log-softmax and the logits differ by a
  per-row constant, which sampling ignores).
- Value Augmented Sampling (Han et al. 2024): s = a TD-trained value, centred over the top k (`centre=True`).
Several guides add up, each with its own weight, so values trained for different rewards compose at
inference.

Guides keep their own KV cache: the prefix is encoded once, and each step scores the k candidates in one
forward pass as k tokens of the same row that all see the cached prefix and not each other (a tree of depth
one, by the attention mask, all at the next position); the cache entry of the token actually chosen is
kept for the next step and the others dropped. `cache=False` recomputes every candidate over the whole prefix (for checking and
for the cost benchmark)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache, LogitsProcessor


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def cache_keyword(model: torch.nn.Module) -> str:
    """transformers 5 renamed the KV cache argument and output (past_key_values -> cache); older ones lack it."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class PrefixScorer(torch.nn.Module):
    """A causal body and a linear head read at every position: the score of each prefix.

    A decoder reward model (`RewardModel` with a scalar head) is one; so is a value model trained on
    prefixes (`decoding.value_model`). Several head outputs (objectives) are combined by `weights`."""

    def __init__(self, body: torch.nn.Module, head: torch.nn.Linear, weights: list[float] | None = None) -> None:
        super().__init__()
        self.body, self.head = body, head
        self.cache_name = cache_keyword(body)
        k = head.out_features
        self.register_buffer("weights", torch.tensor(weights if weights is not None else [1.0 / k] * k))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None,
                past_key_values: DynamicCache | None = None) -> tuple[torch.Tensor, DynamicCache]:
        """Scores [N, T] and the cache. Positions default to each row's count of real tokens so far, so
        left and right padding score alike; a cached step with a tree mask passes its own."""
        if position_ids is None:
            position_ids = _positions(attention_mask)
        out = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        use_cache=True, **{self.cache_name: past_key_values})
        return self.head(out.last_hidden_state).float() @ self.weights, getattr(out, self.cache_name)

    @classmethod
    def from_reward_model(cls, folder: str, weights: list[float] | None = None) -> PrefixScorer:
        from prefalign.rewards.model import load_reward_model

        model = load_reward_model(folder)
        if model.spec.kind != "decoder" or model.spec.head != "scalar":
            raise ValueError(f"{folder}: token-level guidance needs a decoder reward model with a scalar head "
                             f"(got {model.spec.kind}/{model.spec.head})")
        return cls(model.backbone, model.head, weights).eval()


class ModelGuide:
    """Scores candidates with a `PrefixScorer` that shares the policy's tokenizer."""

    def __init__(self, scorer: PrefixScorer, pad_id: int, cache: bool = True) -> None:
        self.scorer, self.pad_id, self.use_cache = scorer.eval(), pad_id, cache
        self.reset()

    def reset(self) -> None:
        self.length, self.mask, self.candidates, self.cache = -1, None, None, None

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        b, k = candidates.shape
        if not self.use_cache:
            return self._recompute(input_ids, candidates)
        if self._new_generation(input_ids):
            self._encode_prompt(input_ids)
        else:
            self._keep_chosen(input_ids[:, -1])
        self.length = input_ids.shape[1]
        # The k candidates go in as k tokens of one row each, sharing the row's cached prefix: each sees the
        # prefix and itself (a tree of depth one), all at the next position.
        prefix = self.mask.bool()[:, None, None, :].expand(b, 1, k, self.mask.shape[1])
        own = torch.eye(k, dtype=torch.bool, device=prefix.device).expand(b, 1, k, k)
        tree = torch.cat([prefix, own], dim=-1)
        if self.scorer.body.config._attn_implementation != "sdpa":  # eager and others add the mask to scores
            tree = torch.zeros(tree.shape, device=tree.device).masked_fill(~tree, torch.finfo(torch.float32).min)
        positions = self.mask.sum(-1, keepdim=True).expand(b, k)
        scores, self.cache = self.scorer(candidates, tree, positions, self.cache)
        self.candidates = candidates
        return scores

    def _keep_chosen(self, chosen_tokens: torch.Tensor) -> None:
        """Drop the k candidates' cache entries but the chosen one's (a finished row may show a pad: any)."""
        b, k = self.candidates.shape
        j = (self.candidates == chosen_tokens[:, None]).float().argmax(-1)
        n = self.mask.shape[1]
        rows = torch.arange(b, device=j.device)
        for layer in self.cache.layers:
            layer.keys = torch.cat([layer.keys[:, :, :n], layer.keys[rows, :, n + j][:, :, None]], dim=2)
            layer.values = torch.cat([layer.values[:, :, :n], layer.values[rows, :, n + j][:, :, None]], dim=2)
        self.mask = torch.cat([self.mask, self.mask.new_ones(b, 1)], 1)

    def _new_generation(self, input_ids: torch.Tensor) -> bool:
        """Not one token longer than the last call, or another batch: a new `generate` call began."""
        return self.mask is None or input_ids.shape[1] != self.length + 1 or self.mask.shape[0] != input_ids.shape[0]

    def _prompt_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Prompts arrive left-padded: everything before a row's first real token is padding.
        return ((input_ids != self.pad_id).long().cumsum(-1) > 0).long()

    def _encode_prompt(self, input_ids: torch.Tensor) -> None:
        self.mask = self._prompt_mask(input_ids)
        _, self.cache = self.scorer(input_ids, self.mask)

    def _recompute(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        b, k = candidates.shape
        if self._new_generation(input_ids):
            self.mask = self._prompt_mask(input_ids)
        else:
            self.mask = torch.cat([self.mask, self.mask.new_ones(b, 1)], 1)
        self.length = input_ids.shape[1]
        ids = torch.cat([input_ids.repeat_interleave(k, 0), candidates.reshape(-1, 1)], 1)
        mask = torch.cat([self.mask, self.mask.new_ones(b, 1)], 1).repeat_interleave(k, 0)
        scores, _ = self.scorer(ids, mask)
        return scores[:, -1].reshape(b, k)


TextScore = Callable[[list[str], list[str]], list[float]]


class TextGuide:
    """Scores candidates by decoding each extended completion and calling a text scorer (e.g. the toy gold
    reward or any reward model by text). No cache to keep; the scorer sees the completion so far."""

    def __init__(self, score: TextScore, tokenizer: object, prompts: list[str]) -> None:
        self.score, self.tokenizer, self.prompts = score, tokenizer, prompts
        self.prompt_width: int | None = None

    def reset(self) -> None:
        self.prompt_width = None

    def __call__(self, input_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        b, k = candidates.shape
        if self.prompt_width is None or input_ids.shape[1] < self.prompt_width:
            self.prompt_width = input_ids.shape[1]
        done = input_ids[:, self.prompt_width:].tolist()
        texts = [self.tokenizer.decode(done[i] + [int(z)], skip_special_tokens=True)
                 for i in range(b) for z in candidates[i]]
        prompts = [self.prompts[i] for i in range(b) for _ in range(k)]
        return torch.tensor(self.score(prompts, texts), dtype=torch.float32).reshape(b, k)


@dataclass
class Guide:
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (input_ids [B, L], candidates [B, k]) -> [B, k]
    weight: float


class GuidedLogits(LogitsProcessor):
    """logit(z) + sum_g w_g s_g(prefix + z) over the policy's top k tokens, -inf elsewhere."""

    def __init__(self, guides: list[Guide], k: int = 10, centre: bool = False) -> None:
        if k < 1:
            raise ValueError(f"top-k must be at least 1, got {k}")
        self.guides, self.k, self.centre = guides, k, centre

    def reset(self) -> None:
        for g in self.guides:
            getattr(g.score, "reset", lambda: None)()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = scores.topk(self.k, dim=-1)
        bonus = torch.zeros_like(top.values)
        for g in self.guides:
            if g.weight:
                s = g.score(input_ids, top.indices).to(bonus)
                bonus += g.weight * (s - s.mean(-1, keepdim=True) if self.centre else s)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, top.indices, top.values + bonus)
