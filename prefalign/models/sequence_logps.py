"""The log-probs a model gives each row of a batch: the typed value between the model and the losses. Kept
apart from models/logprobs.py (which computes it) so that the loss registry is read without transformers."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SequenceLogps:
    """Per row: log pi(y|x) summed over completion tokens and the number of completion tokens.

    Kept only when asked:
      tokens/mask   per-token log-probs and the completion mask ([N, T-1])
      wpo           WPO's per-token mean of log p_t - log sum_v p_v^2 (Zhou et al. 2024, eq. 2), no gradient
      vocab_logps   the full next-token distribution, log-softmax ([N, T-1, V], no gradient; a reference's,
                    for the token-level KL of TDPO/SparsePO). The packed path keeps instead
      head_hidden   the final hidden states at the completion-predicting positions ([M, H]) and
      head          the LM head, so the policy recomputes the reference's distribution chunk by chunk
      token_kl      KL(pi_ref(.|x, y_<t) || pi(.|x, y_<t)) per position, given the reference's outputs;
                    differentiable in the policy
      hidden        hidden states of every layer after the embeddings ([L, N, T-1, H], no gradient)
      final_hidden  the last layer's hidden states on the same grid as `tokens` ([N, T, H], no gradient;
                    what a critic's value head reads)
      entropy       the next-token distribution's entropy on the same grid ([N, T], no gradient; SRFT)"""

    sum: torch.Tensor
    n_tokens: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    wpo: torch.Tensor | None = None
    vocab_logps: torch.Tensor | None = None
    token_kl: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    head_hidden: torch.Tensor | None = None
    head: torch.nn.Module | None = None
    entropy: torch.Tensor | None = None
    final_hidden: torch.Tensor | None = None
