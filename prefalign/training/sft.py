"""The SFT recipe: next-token NLL on completion tokens, normalised over the completion tokens of the whole
effective batch. Shares the training loop with preference optimisation."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console

from prefalign.config.schema import TrainerConfig
from prefalign.data.collate import TokenBatch, pad_sequences
from prefalign.data.tokenize import TokenizedCompletion
from prefalign.models.logprobs import token_logps
from prefalign.training.loop import LoopData, LoopResult, Objective, train_loop


class SFTObjective(Objective):
    def units(self, batch: TokenBatch) -> int:
        return int(batch.completion_mask[:, 1:].sum())

    def num_tokens(self, batch: TokenBatch) -> int:
        return batch.num_tokens

    def loss(self, model: torch.nn.Module, batch: TokenBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logp, mask = token_logps(model, batch)
        per_seq = -logp.sum(-1)
        return per_seq.sum(), {"nll_per_token": per_seq / mask.sum(-1).clamp(min=1)}


def sft_loop_data(examples: list[TokenizedCompletion], eval_examples: list[TokenizedCompletion], pad_id: int,
                  eval_batch_size: int) -> LoopData:
    """The loop's view of SFT examples: padded (prompt, completion) batches, held-out ones batched once."""
    def collate(items: list[TokenizedCompletion], _index: list[int]) -> TokenBatch:
        return pad_sequences([(e.prompt_ids, e.completion_ids) for e in items], pad_id)

    eval_batches = [collate(eval_examples[i:i + eval_batch_size], [])
                    for i in range(0, len(eval_examples), eval_batch_size)]
    return LoopData(examples, collate, eval_batches)


def train_sft(model: torch.nn.Module, examples: list[TokenizedCompletion], pad_id: int, cfg: TrainerConfig,
              run_dir: Path, eval_examples: list[TokenizedCompletion] | None = None,
              console: Console | None = None) -> LoopResult:
    data = sft_loop_data(examples, eval_examples or [], pad_id, cfg.eval_batch_size)
    return train_loop(model, SFTObjective(), data, cfg, run_dir, console=console)
