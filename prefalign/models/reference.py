"""Reference policies: a frozen copy, the policy with its adapter disabled, or precomputed log-probs."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from prefalign.data.collate import PairBatch
from prefalign.models.logprobs import SequenceLogps, sequence_logps


class Reference:
    """Gives the reference's completion log-probs for a batch's rows; `want` asks for the token-level extras
    of `sequence_logps` (keep_tokens, keep_vocab, keep_hidden) or its sampling temperature."""

    def outputs(self, batch: PairBatch, chunk: int | None = None, **want: bool) -> SequenceLogps:
        raise NotImplementedError

    def logps(self, batch: PairBatch) -> torch.Tensor:
        return self.outputs(batch).sum


class FrozenCopyReference(Reference):
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def copy_of(cls, policy: torch.nn.Module) -> FrozenCopyReference:
        return cls(copy.deepcopy(policy))

    @torch.no_grad()
    def outputs(self, batch: PairBatch, chunk: int | None = None, **want: bool) -> SequenceLogps:
        return sequence_logps(self.model, batch.tokens, chunk=chunk, **want)


class DisabledAdapterReference(Reference):
    """The reference is the base under the adapter (LoRA, IA3): no second copy of the weights in memory."""

    def __init__(self, peft_model: torch.nn.Module) -> None:
        if not hasattr(peft_model, "disable_adapter"):
            raise ValueError("reference.kind=adapter needs a model with an adapter (model.lora or model.ia3)")
        self.model = peft_model

    @torch.no_grad()
    def outputs(self, batch: PairBatch, chunk: int | None = None, **want: bool) -> SequenceLogps:
        was_training = self.model.training
        self.model.eval()
        with self.model.disable_adapter():
            out = sequence_logps(self.model, batch.tokens, chunk=chunk, **want)
        self.model.train(was_training)
        return out


class PrecomputedReference(Reference):
    """Reference log-probs computed once before training, looked up by each pair's dataset index."""

    def __init__(self, chosen: torch.Tensor, rejected: torch.Tensor, n_chosen: torch.Tensor,
                 n_rejected: torch.Tensor) -> None:
        self.chosen, self.rejected, self.n_chosen, self.n_rejected = chosen, rejected, n_chosen, n_rejected

    @classmethod
    def compute(cls, reference: Reference, batches: Iterable[PairBatch], n_pairs: int) -> PrecomputedReference:
        table = torch.empty(4, n_pairs)
        for batch in batches:
            out = reference.outputs(batch)
            b, idx = batch.num_pairs, batch.index.cpu()
            table[0, idx], table[1, idx] = out.sum[:b].float().cpu(), out.sum[b:].float().cpu()
            table[2, idx], table[3, idx] = out.n_tokens[:b].float().cpu(), out.n_tokens[b:].float().cpu()
        return cls(*table)

    def outputs(self, batch: PairBatch, chunk: int | None = None, **want: bool) -> SequenceLogps:
        if any(want.values()):
            raise ValueError("precomputed reference log-probs are per sequence; a token-level loss needs "
                             "reference.kind=copy or adapter")
        idx = batch.index.cpu()
        device = batch.tokens.input_ids.device
        return SequenceLogps(torch.cat([self.chosen[idx], self.rejected[idx]]).to(device),
                             torch.cat([self.n_chosen[idx], self.n_rejected[idx]]).to(device))
