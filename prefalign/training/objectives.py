"""Objectives for the training loop, one per kind of loss input: pairs, ranked lists, labelled completions.

Each computes only what its losses need, returns the summed loss over its units (pairs, lists, examples) with
per-example metrics, and carries the running state of stateful losses into checkpoints."""

from __future__ import annotations

import torch

from prefalign.data.collate import ListBatch, PairBatch, UnpairedBatch
from prefalign.losses.inputs import ListLogps, PairLogps, UnpairedLogps
from prefalign.losses.registry import TOKEN_LEVEL_NEEDS, BoundLoss, combined_needs
from prefalign.models.logprobs import SequenceLogps, sequence_logps
from prefalign.models.reference import Reference
from prefalign.training.batch_sources import StepBatches
from prefalign.training.coupled import Share, step_shares
from prefalign.training.distributed import Processes
from prefalign.training.loop import Objective

Inputs = PairLogps | ListLogps | UnpairedLogps
Batch = PairBatch | ListBatch | UnpairedBatch


class LossObjective(Objective):
    """What the three objectives share: the weighted sum of terms, their metrics and their state. Each
    subclass says how a batch becomes loss inputs (`inputs`) and which metrics those give (`input_metrics`)."""

    def __init__(self, losses: list[BoundLoss], reference: Reference | None, logp_chunk: int | None = None) -> None:
        self.losses = losses
        self.logp_chunk = logp_chunk
        self.reference = reference
        self.needs = combined_needs(losses)
        self.beta = next((t.beta for t in losses if t.beta is not None), 1.0)
        self.couples_batch = any(t.couples_batch for t in losses)
        if self.couples_batch and self.needs & TOKEN_LEVEL_NEEDS:
            names = ", ".join(t.spec.name for t in losses)
            raise ValueError(f"loss terms {names}: a loss that couples the batch cannot be combined with token-level "
                             "terms (their per-token inputs are not gathered across micro-batches)")
        self._pending: list[Share] = []

    def inputs(self, model: torch.nn.Module, batch: Batch) -> Inputs:
        raise NotImplementedError

    def input_metrics(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        return {}

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = self.inputs(model, batch)
        metrics = self.input_metrics(inputs)
        if self._pending:  # a coupled step: this micro-batch's share of the whole step's loss
            share = self._pending.pop(0)
            return share.surrogate(inputs), metrics | share.metrics
        return self._sum_terms(inputs, model.training, metrics).sum(), metrics

    def prepare_step(self, model: torch.nn.Module, step: StepBatches, processes: Processes) -> None:
        """For losses that couple the batch: pass 1 of training/coupled.py over the step's micro-batches."""
        self._pending = []
        if not self.couples_batch:
            return
        with torch.no_grad():
            parts = [self.inputs(model, b) for b in step.micro]  # fillers too: FSDP2 needs every forward

        def step_loss(inputs: Inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            metrics: dict[str, torch.Tensor] = {}
            return self._sum_terms(inputs, model.training, metrics), metrics
        self._pending = step_shares(parts[:len(step.counted)], step.fillers, step_loss, processes)

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

    inputs = pair_logps

    def input_metrics(self, logps: PairLogps) -> dict[str, torch.Tensor]:
        metrics = {"logps/chosen": logps.chosen.detach(), "logps/rejected": logps.rejected.detach()}
        if logps.ref_chosen is not None:
            d_w, d_l = logps.log_ratios()
            r_w, r_l = self.beta * d_w.detach(), self.beta * d_l.detach()
            metrics |= {"rewards/chosen": r_w, "rewards/rejected": r_l, "rewards/margins": r_w - r_l,
                        "rewards/accuracies": (r_w > r_l).float()}
        return metrics


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

    inputs = list_logps

    def input_metrics(self, logps: ListLogps) -> dict[str, torch.Tensor]:
        return {"logps/best": logps.logps[:, 0].detach()}


class UnpairedObjective(LossObjective):
    """Losses on labelled completions (KTO); rows [B, 2B) of a batch, where present, are the mismatched KL rows."""

    def units(self, batch: UnpairedBatch) -> int:
        return batch.num_examples

    def unpaired_logps(self, model: torch.nn.Module, batch: UnpairedBatch) -> UnpairedLogps:
        b = batch.num_examples
        policy = sequence_logps(model, batch.tokens, chunk=self.logp_chunk)
        ref = self._reference_outputs(batch)
        kl_rows = policy.sum.shape[0] > b
        return UnpairedLogps(policy.sum[:b], policy.n_tokens[:b], batch.labels.to(policy.sum.device),
                             None if ref is None else ref.sum[:b], policy.sum[b:].detach() if kl_rows else None,
                             None if ref is None or not kl_rows else ref.sum[b:])

    inputs = unpaired_logps

    def input_metrics(self, logps: UnpairedLogps) -> dict[str, torch.Tensor]:
        return {"logps/completion": logps.logps.detach()}


OBJECTIVES = {"pairwise": PairObjective, "ranking": ListObjective, "unpaired": UnpairedObjective}
