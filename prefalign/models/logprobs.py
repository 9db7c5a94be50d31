"""Completion log-probs of each row of a TokenBatch: summed, and what token-level losses ask for.

Position t of every [N, T-1] tensor is the prediction of token t+1 from tokens <= t; values off the
completion are zero."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prefalign.data.collate import TokenBatch
from prefalign.data.packing import PackedBatch
from prefalign.models.packed_attention import enable_packed_attention


@dataclass
class SequenceLogps:
    """Per row: log pi(y|x) summed over completion tokens and the number of completion tokens.

    Kept only when asked:
      tokens/mask   per-token log-probs and the completion mask ([N, T-1])
      wpo           WPO's per-token mean of log p_t - log sum_v p_v^2 (Zhou et al. 2024, eq. 2), no gradient
      vocab_logps   the full next-token distribution, log-softmax ([N, T-1, V], no gradient; a reference's,
                    for the token-level KL of TDPO/SparsePO)
      token_kl      KL(pi_ref(.|x, y_<t) || pi(.|x, y_<t)) per position ([N, T-1]), given the reference's
                    vocab_logps; differentiable in the policy
      hidden        hidden states of every layer after the embeddings ([L, N, T-1, H], no gradient)"""

    sum: torch.Tensor
    n_tokens: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    wpo: torch.Tensor | None = None
    vocab_logps: torch.Tensor | None = None
    token_kl: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


def token_logps(model: torch.nn.Module, batch: TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log pi(token_t | tokens_<t) for t >= 1, and the completion mask aligned to them ([N, T-1])."""
    out = sequence_logps(model, batch, keep_tokens=True)
    return out.tokens, out.mask


def sequence_logps(model: torch.nn.Module, batch: TokenBatch | PackedBatch, keep_tokens: bool = False,
                   wpo: bool = False, keep_vocab: bool = False, kl_from: torch.Tensor | None = None,
                   keep_hidden: bool = False, chunk: int | None = None) -> SequenceLogps:
    """`kl_from`: a reference's vocab_logps for the same batch; the result then carries token_kl. `chunk`:
    completion positions per LM-head chunk in the packed layout (default LOGP_CHUNK)."""
    if isinstance(batch, PackedBatch):
        if keep_tokens or wpo or keep_vocab or kl_from is not None or keep_hidden:
            raise ValueError("token-level outputs need the padded layout (engine.packed: false)")
        return packed_sequence_logps(model, batch, chunk or LOGP_CHUNK)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=keep_hidden)
    logits = out.logits[:, :-1].float()
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
            result.token_kl = (kl_from.exp() * (kl_from - log_probs)).sum(-1) * mask
    if keep_hidden:
        result.hidden = torch.stack([h[:, :-1].detach() for h in out.hidden_states[1:]])
    return result


# -- the packed, prefix-shared layout -------------------------------------------------------------------------

LOGP_CHUNK = 1024  # completion positions per LM-head chunk: peak memory holds chunk x vocab logits


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers CausalLM under a PEFT wrapper (LoRA layers live inside it, so calling its parts
    directly keeps the adapter, and `disable_adapter()` still applies)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_chunked_head(model: torch.nn.Module) -> bool:
    """Models whose logits are exactly lm_head(final hidden state): no soft-capping or logit scaling."""
    cfg = causal_lm(model).config
    return not any(getattr(cfg, k, None) for k in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"))


def _token_logps(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return -F.cross_entropy(logits, targets, reduction="none")


def chunked_token_logps(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                        chunk: int = LOGP_CHUNK) -> torch.Tensor:
    """log softmax(head(hidden))[targets] for [M, H] hidden states, `chunk` rows at a time. Under autograd
    each chunk is checkpointed: its logits are freed after the forward and recomputed in the backward, so
    no [M, vocab] tensor ever exists."""
    parts = []
    for start in range(0, hidden.shape[0], chunk):
        h, t = hidden[start:start + chunk], targets[start:start + chunk]
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(torch.utils.checkpoint.checkpoint(_token_logps, head, h, t, use_reentrant=False))
        else:
            parts.append(_token_logps(head, h, t))
    return torch.cat(parts) if parts else hidden.new_zeros(0)


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


def packed_sequence_logps(model: torch.nn.Module, batch: PackedBatch, chunk: int = LOGP_CHUNK) -> SequenceLogps:
    """Summed completion log-probs per output sequence from a packed, prefix-shared batch. The LM head runs
    only on the positions that predict completion tokens, chunk by chunk."""
    lm = causal_lm(model)
    # Segment-wise attention where the model allows it; otherwise SDPA (or the model's own) with the 4D mask.
    layout = {"packed_segments": batch.layout} if enable_packed_attention(lm) else {}
    mask = _mask_for(lm, batch.attention_mask)
    hidden = lm.get_decoder()(input_ids=batch.input_ids, attention_mask=mask,
                              position_ids=batch.position_ids, **layout).last_hidden_state
    picked = hidden.flatten(0, 1)[batch.predict_at]
    targets = batch.input_ids.flatten()[batch.token_at]
    if supports_chunked_head(model):
        logp = chunked_token_logps(lm.get_output_embeddings(), picked, targets, chunk)
    else:  # the model post-processes its logits: take them from the full forward
        logits = model(input_ids=batch.input_ids, attention_mask=mask,
                       position_ids=batch.position_ids, **layout).logits.float()
        logp = -F.cross_entropy(logits.flatten(0, 1)[batch.predict_at], targets, reduction="none")
    sums = torch.zeros(batch.num_sequences, dtype=logp.dtype, device=logp.device).index_add(0, batch.slot, logp)
    counts = torch.bincount(batch.slot, minlength=batch.num_sequences).to(logp.dtype)
    return SequenceLogps(sums, counts)
