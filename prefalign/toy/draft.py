"""A draft model for the toy base: a one-layer Llama SFT-trained on the toy corpus, for speculative sampling.

    prefalign toy build-draft --out runs/toy-draft

It shares the toy tokenizer and is about 20x smaller than the base (the base's own recipe, shorter: 300 steps
of 64 on a corpus of fresh seed), so that its proposals are often, not always, what the base would draw."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer

from prefalign.config.schema import TrainerConfig
from prefalign.data.tokenize import CompletionTokenizer
from prefalign.models.loading import TOY_BASE
from prefalign.models.pretrained import load_pretrained_files
from prefalign.toy.base import sft_corpus
from prefalign.toy.model import new_toy_model
from prefalign.training.export import save_pretrained_atomic
from prefalign.training.sft import train_sft

DRAFT_TRAINER = TrainerConfig(seed=1, max_steps=300, batch_size=64, lr=3e-3, warmup_steps=20, schedule="cosine",
                              max_grad_norm=1.0, log_every=100, eval_every=10**6)
DRAFT_SHAPE = dict(hidden=64, layers=1, heads=2, intermediate=192)


def build_draft(out_dir: Path, trainer: TrainerConfig | None = None) -> Path:
    trainer = trainer or DRAFT_TRAINER
    torch.manual_seed(trainer.seed)
    tokenizer = load_pretrained_files(AutoTokenizer, str(TOY_BASE))
    encoder = CompletionTokenizer(tokenizer, max_length=128)
    examples = [encoder.encode(p, r) for p, r in sft_corpus(trainer.max_steps * trainer.batch_size + 200, trainer.seed)]
    model = new_toy_model(tokenizer, **DRAFT_SHAPE)
    with tempfile.TemporaryDirectory() as run_dir:
        train_sft(model, examples[200:], tokenizer.pad_token_id, trainer, Path(run_dir), examples[:200], None)
    model.generation_config.do_sample = True
    return save_pretrained_atomic(model, tokenizer, Path(out_dir))
