"""Objectives for the training loop, one per kind of loss input: pairs, ranked lists, labelled completions.

Each computes only what its losses need, returns the summed loss over its units (pairs, lists, examples) with
per-example metrics, and carries the running state of stateful losses into checkpoints."""

from __future__ import annotations

import torch

from prefalign.data.collate import ListBatch, PairBatch, UnpairedBatch
from prefalign.losses.inputs import ListLogps, PairLogps, UnpairedLogps
from prefalign.losses.registry import BoundLoss, combined_needs
from prefalign.models.logprobs import SequenceLogps, sequence_logps
from prefalign.models.reference import Reference
from prefalign.training.loop import Objective


class LossObjective(Objective):
    """What the three objectives share: the weighted sum of terms, their metrics and their state."""

    def __init__(self, losses: list[BoundLoss], reference: Reference | None, logp_chunk: int | None = None) -> None:
        self.losses = losses
        self.logp_chunk = logp_chunk
        self.reference = reference
        self.needs = combined_needs(losses)
        self.beta = next((t.beta for t in losses if t.beta is not None), 1.0)

    def num_tokens(self, batch: PairBatch | ListBatch | UnpairedBatch) -> int:
        return batch.tokens.num_tokens

    def _reference_outputs(self, batch: PairBatch | ListBatch | UnpairedBatch) -> SequenceLogps | None:
        if self.reference is None:
            return None
        return self.reference.outputs(batch, chunk=self.logp_chunk, keep_tokens="reference_token_logps" in self.needs,
                                      keep_vocab="token_kl" in self.needs,
                                      keep_hidden="reference_hidden" in self.needs)

    def build_modules(self, policy: torch.nn.Module) -> torch.nn.ModuleDict:
        """The losses' own trainable modules (SparsePO's learned mask), keyed by term index; the loop trains
        and checkpoints them with the policy."""
        built = {str(i): m for i, t in enumerate(self.losses) if (m := t.build_module(policy)) is not None}
        return torch.nn.ModuleDict(built)

    def _sum_terms(self, inputs: PairLogps | ListLogps | UnpairedLogps, training: bool,
                   metrics: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for i, term in enumerate(self.losses):
            out = term(inputs, update=training)
            total = out.loss if total is None else total + out.loss
            if len(self.losses) > 1:
                metrics[f"loss/{i}_{term.spec.name}"] = out.loss.detach()
            metrics |= {k: torch.as_tensor(v).detach() for k, v in out.metrics.items()}
        return total

    def state_dict(self) -> dict:
        """Running statistics of stateful losses (BCO, beta-DPO), saved with checkpoints."""
        return {str(i): dict(t.state) for i, t in enumerate(self.losses) if t.state}

    def load_state_dict(self, state: dict) -> None:
        for i, values in state.items():
            self.losses[int(i)].state.update(values)


class PairObjective(LossObjective):
    """Pairwise losses; logs implicit rewards as TRL does (beta * log-ratio)."""

    def units(self, batch: PairBatch) -> int:
        return batch.num_pairs

    def pair_logps(self, model: torch.nn.Module, batch: PairBatch) -> PairLogps:
        reference = self._reference_outputs(batch)
        policy = sequence_logps(model, batch.tokens, keep_tokens="token_logps" in self.needs, wpo="wpo" in self.needs,
                                kl_from=reference if "token_kl" in self.needs else None,
                                chunk=self.logp_chunk)
        if reference is not None:
            reference.vocab_logps = reference.head_hidden = None  # drop them as soon as the KL is taken
        return PairLogps.from_outputs(policy, reference, batch.num_pairs, batch.extras)

    def loss(self, model: torch.nn.Module, batch: PairBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logps = self.pair_logps(model, batch)
        metrics = {"logps/chosen": logps.chosen.detach(), "logps/rejected": logps.rejected.detach()}
        total = self._sum_terms(logps, model.training, metrics)
        if logps.ref_chosen is not None:
            d_w, d_l = logps.log_ratios()
            r_w, r_l = self.beta * d_w.detach(), self.beta * d_l.detach()
            metrics |= {"rewards/chosen": r_w, "rewards/rejected": r_l, "rewards/margins": r_w - r_l,
                        "rewards/accuracies": (r_w > r_l).float()}
        return total.sum(), metrics


class ListObjective(LossObjective):
    """Ranking losses over prompts with k ranked responses."""

    def units(self, batch: ListBatch) -> int:
        return batch.num_lists

    def list_logps(self, model: torch.nn.Module, batch: ListBatch) -> ListLogps:
        shape = (batch.num_lists, batch.k)
        policy = sequence_logps(model, batch.tokens, chunk=self.logp_chunk)
        ref = self._reference_outputs(batch)
        return ListLogps(policy.sum.view(shape), policy.n_tokens.view(shape), batch.valid,
                         None if ref is None else ref.sum.view(shape))

    def loss(self, model: torch.nn.Module, batch: ListBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logps = self.list_logps(model, batch)
        metrics = {"logps/best": logps.logps[:, 0].detach()}
        return self._sum_terms(logps, model.training, metrics).sum(), metrics


class UnpairedObjective(LossObjective):
    """Losses on labelled completions (KTO); rows [B, 2B) of a batch are the mismatched KL rows."""

    def units(self, batch: UnpairedBatch) -> int:
        return batch.num_examples

    def unpaired_logps(self, model: torch.nn.Module, batch: UnpairedBatch) -> UnpairedLogps:
        b = batch.num_examples
        policy = sequence_logps(model, batch.tokens, chunk=self.logp_chunk)
        ref = self._reference_outputs(batch)
        return UnpairedLogps(policy.sum[:b], policy.n_tokens[:b], batch.labels.to(policy.sum.device),
                             None if ref is None else ref.sum[:b], policy.sum[b:].detach(),
                             None if ref is None else ref.sum[b:])

    def loss(self, model: torch.nn.Module, batch: UnpairedBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logps = self.unpaired_logps(model, batch)
        metrics: dict[str, torch.Tensor] = {"logps/completion": logps.logps.detach()}
        return self._sum_terms(logps, model.training, metrics).sum(), metrics


OBJECTIVES = {"pairwise": PairObjective, "ranking": ListObjective, "unpaired": UnpairedObjective}
