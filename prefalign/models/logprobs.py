"""Completion log-probs of each row of a TokenBatch or PackedBatch: summed, and what token-level losses ask for.

Padded rows: position t of every [N, T-1] tensor is the prediction of token t+1 from tokens <= t. Packed
rows: column j of every [N, T] tensor is the j-th completion token of sequence n (T = the longest completion).
Either way values off the completion are zero and `mask` says which are on it; token-level losses only sum,
count and cumulate along the completion, so both grids serve them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import PeftModel

from prefalign.data.collate import TokenBatch
from prefalign.data.packing import PackedBatch
from prefalign.models.packed_attention import enable_packed_attention
from prefalign.models.sequence_logps import SequenceLogps


def token_logps(model: torch.nn.Module, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log pi(token_t | tokens_<t) for t >= 1, and the completion mask aligned to them ([N, T-1])."""
    out = sequence_logps(model, batch, keep_tokens=True)
    return out.tokens, out.mask


def sequence_logps(model: torch.nn.Module, batch: TokenBatch | PackedBatch, keep_tokens: bool = False,
                   wpo: bool = False, keep_vocab: bool = False, kl_from: SequenceLogps | None = None,
                   keep_hidden: bool = False, chunk: int | None = None,
                   keep_final_hidden: bool = False, temperature: float = 1.0,
                   keep_entropy: bool = False) -> SequenceLogps:
    """`kl_from`: a reference's outputs for the same batch, taken with keep_vocab; the result then carries
    token_kl. `chunk`: completion positions per LM-head chunk in the packed layout (default LOGP_CHUNK).
    `temperature`: log-probs of softmax(logits / temperature), the distribution a sampler at that
    temperature draws from (RL's importance ratios need the sampler's own)."""
    if isinstance(batch, PackedBatch):
        return packed_sequence_logps(model, batch, chunk or LOGP_CHUNK, keep_tokens=keep_tokens, wpo=wpo,
                                     keep_vocab=keep_vocab, kl_from=kl_from, keep_hidden=keep_hidden,
                                     keep_final_hidden=keep_final_hidden, temperature=temperature,
                                     keep_entropy=keep_entropy)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                output_hidden_states=keep_hidden or keep_final_hidden)
    logits = out.logits[:, :-1].float() / temperature
    labels = batch.input_ids[:, 1:]
    # cross_entropy reads one log-prob per token without keeping a separate log-softmax copy.
    logp = -F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
    mask = batch.completion_mask[:, 1:].to(logp.dtype)
    logp = logp * mask
    result = SequenceLogps(logp.sum(-1), mask.sum(-1))
    if keep_tokens:
        result.tokens, result.mask = logp, mask
    if wpo or keep_vocab or kl_from is not None:
        log_probs = logits.log_softmax(-1)
        if wpo:
            with torch.no_grad():
                adjusted = logp.detach() - torch.logsumexp(2 * log_probs, dim=-1)
                result.wpo = (adjusted * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        if keep_vocab:
            result.vocab_logps = log_probs.detach()
        if kl_from is not None:
            ref = kl_from.vocab_logps
            result.token_kl = (ref.exp() * (ref - log_probs)).sum(-1) * mask
    if keep_hidden:
        result.hidden = torch.stack([h[:, :-1].detach() for h in out.hidden_states[1:]])
    if keep_final_hidden:
        result.final_hidden = out.hidden_states[-1][:, :-1].detach() * mask[..., None]
    if keep_entropy:
        result.entropy = entropy_of(logits.detach()) * mask
    return result


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p_v log p_v of softmax(logits) over the last dimension."""
    log_probs = logits.float().log_softmax(-1)
    return -(log_probs.exp() * log_probs).sum(-1)


# -- the packed, prefix-shared layout -------------------------------------------------------------------------

LOGP_CHUNK = 1024  # completion positions per LM-head chunk: peak memory holds chunk x vocab logits


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under a DistributedDataParallel wrapper (FSDP2 shards in place and wraps nothing)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers CausalLM under DDP and PEFT wrappers (LoRA layers live inside it, so calling its parts
    directly keeps the adapter, and `disable_adapter()` still applies)."""
    model = unwrap(model)
    return model.get_base_model() if isinstance(model, PeftModel) else model


def supports_chunked_head(model: torch.nn.Module) -> bool:
    """Models whose logits are exactly lm_head(final hidden state): no soft-capping or logit scaling."""
    cfg = causal_lm(model).config
    return not any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"))


def _head_outputs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                  ref_head: torch.nn.Module | None, ref_hidden: torch.Tensor | None, wpo: bool) -> torch.Tensor:
    """Columns per position: log p(target); KL(pi_ref || pi) when a reference head is given; WPO's
    log p(target) - log sum_v p_v^2 (no gradient) when asked."""
    logits = head(hidden).float()
    if ref_head is None and not wpo:  # cross_entropy reads one log-prob without a log-softmax copy
        return -F.cross_entropy(logits, targets, reduction="none")[:, None]
    log_probs = logits.log_softmax(-1)
    logp = log_probs.gather(1, targets[:, None]).squeeze(1)
    columns = [logp]
    if ref_head is not None:
        with torch.no_grad():
            ref = ref_head(ref_hidden).float().log_softmax(-1)
        columns.append((ref.exp() * (ref - log_probs)).sum(-1))
    if wpo:
        columns.append((logp - torch.logsumexp(2 * log_probs, dim=-1)).detach())
    return torch.stack(columns, dim=1)


def chunked_head_outputs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                         chunk: int = LOGP_CHUNK, ref_head: torch.nn.Module | None = None,
                         ref_hidden: torch.Tensor | None = None, wpo: bool = False) -> torch.Tensor:
    """`_head_outputs` for [M, H] hidden states, `chunk` rows at a time -> [M, columns]. Under autograd each
    chunk is checkpointed: its logits (and the reference's) are freed after the forward and recomputed in the
    backward, so no [M, vocab] tensor ever exists."""
    parts = []
    for start in range(0, hidden.shape[0], chunk):
        args = (head, hidden[start:start + chunk], targets[start:start + chunk], ref_head,
                None if ref_hidden is None else ref_hidden[start:start + chunk], wpo)
        if torch.is_grad_enabled() and hidden.requires_grad:
            parts.append(torch.utils.checkpoint.checkpoint(_head_outputs, *args, use_reentrant=False))
        else:
            parts.append(_head_outputs(*args))
    columns = 1 + (ref_head is not None) + wpo
    return torch.cat(parts) if parts else hidden.new_zeros(0, columns)


def _grid(values: torch.Tensor, slot: torch.Tensor, col: torch.Tensor, n: int) -> torch.Tensor:
    """Scored-token values [M, ...] -> [n, longest completion, ...], zero elsewhere."""
    width = int(col.max()) + 1 if col.numel() else 0
    return values.new_zeros((n, width, *values.shape[1:])).index_put((slot, col), values)


def _column_in_sequence(slot: torch.Tensor, n: int) -> torch.Tensor:
    """Each scored token's index within its completion (a completion's tokens are contiguous, in order)."""
    order = torch.arange(slot.numel(), device=slot.device)
    first = torch.full((n,), slot.numel(), device=slot.device, dtype=order.dtype).scatter_reduce(
        0, slot, order, reduce="amin")
    return order - first[slot]


def _mask_for(lm: torch.nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """The packed 4D mask as the model's attention takes it: boolean for SDPA, additive for eager."""
    impl = lm.config._attn_implementation or "eager"
    if impl in ("sdpa", "prefalign_packed"):
        return mask
    if "flash" in impl or "flex" in impl:
        raise ValueError(f"the packed engine needs attention that takes a 4D mask; attn_implementation={impl} does "
                         "not. Use sdpa (the engine then runs its own segment-wise kernel) or engine.packed: false")
    dtype = next(lm.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def packed_inputs(model: torch.nn.Module, batch: PackedBatch) -> dict:
    """Keyword arguments that run `model` (or its decoder) over a packed batch: segment-wise attention where
    the model allows it, otherwise SDPA (or the model's own attention) with the 4D mask."""
    layout = {"packed_segments": batch.layout} if enable_packed_attention(model) else {}
    return {"input_ids": batch.input_ids, "attention_mask": _mask_for(model, batch.attention_mask),
            "position_ids": batch.position_ids, **layout}


class TemperedHead(torch.nn.Module):
    """An LM head whose logits are divided by the sampling temperature."""

    def __init__(self, head: torch.nn.Module, temperature: float) -> None:
        super().__init__()
        self.head, self.temperature = head, temperature

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden) / self.temperature


def packed_sequence_logps(model: torch.nn.Module, batch: PackedBatch, chunk: int = LOGP_CHUNK,
                          keep_tokens: bool = False, wpo: bool = False, keep_vocab: bool = False,
                          kl_from: SequenceLogps | None = None, keep_hidden: bool = False,
                          keep_final_hidden: bool = False, temperature: float = 1.0,
                          keep_entropy: bool = False) -> SequenceLogps:
    """Completion log-probs per output sequence from a packed, prefix-shared batch. The LM head runs only on
    the positions that predict completion tokens, chunk by chunk, and so do the token-level KL (against the
    reference's head and hidden states) and WPO's weights."""
    lm = causal_lm(model)
    token_level = (keep_tokens or wpo or keep_vocab or kl_from is not None or keep_hidden or keep_final_hidden
                   or keep_entropy)
    if token_level and not supports_chunked_head(model):
        raise ValueError("token-level outputs of a model that post-processes its logits need the padded layout "
                         "(engine.packed: false)")
    inputs = packed_inputs(lm, batch)
    targets = batch.input_ids.flatten()[batch.token_at]
    n = batch.num_sequences
    chunked = supports_chunked_head(model)
    # Through the model's own forward, so that a DDP or FSDP wrapper sees the call; with the chunked head the
    # forward projects one position only and the head runs below on the completion positions.
    out = model(**inputs, output_hidden_states=True, logits_to_keep=1 if chunked else 0)
    picked = out.hidden_states[-1].flatten(0, 1)[batch.predict_at]
    if chunked:
        head = lm.get_output_embeddings()
        tempered = head if temperature == 1.0 else TemperedHead(head, temperature)
        columns = chunked_head_outputs(tempered, picked, targets, chunk, wpo=wpo,
                                       ref_head=None if kl_from is None else kl_from.head,
                                       ref_hidden=None if kl_from is None else kl_from.head_hidden)
        logp = columns[:, 0]
    else:  # the model post-processes its logits: take them from the full forward
        logits = out.logits.float().flatten(0, 1)[batch.predict_at] / temperature
        logp = -F.cross_entropy(logits, targets, reduction="none")
    sums = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, batch.slot, logp)
    counts = torch.bincount(batch.slot, minlength=n).to(logp.dtype)
    result = SequenceLogps(sums, counts)
    if not token_level:
        return result
    col = _column_in_sequence(batch.slot, n)
    if keep_tokens:
        result.tokens = _grid(logp, batch.slot, col, n)
        result.mask = _grid(torch.ones_like(logp), batch.slot, col, n)
    if kl_from is not None:
        result.token_kl = _grid(columns[:, 1], batch.slot, col, n)
    if wpo:
        weights = torch.zeros(n, dtype=logp.dtype, device=logp.device).index_add(0, batch.slot, columns[:, -1])
        result.wpo = weights / counts.clamp(min=1)
    if keep_vocab:
        result.head_hidden, result.head = picked.detach(), getattr(head, "base_layer", head)
    if keep_hidden:
        per_layer = torch.stack([h.flatten(0, 1)[batch.predict_at].detach() for h in out.hidden_states[1:]])
        result.hidden = _grid(per_layer.transpose(0, 1), batch.slot, col, n).permute(2, 0, 1, 3)
    if keep_final_hidden:
        result.final_hidden = _grid(picked.detach(), batch.slot, col, n)
    if keep_entropy:
        with torch.no_grad():  # chunk by chunk, so no [M, vocab] tensor is kept
            h = torch.cat([entropy_of(tempered(part)) for part in picked.split(chunk)])
        result.entropy = _grid(h, batch.slot, col, n)
    return result
