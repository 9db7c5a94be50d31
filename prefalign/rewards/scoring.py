"""A saved reward model as a function of text: reward(prompt, response), for judges and evaluation."""

from __future__ import annotations

import torch

from prefalign.config.schema import ModelConfig
from prefalign.models.loading import load_tokenizer
from prefalign.rewards.inputs import RewardTokenizer
from prefalign.rewards.model import load_reward_model, load_reward_spec

DEFAULT_MAX_LENGTH = 512  # for folders saved before the training max length was recorded


def load_reward_tokenizer(folder: str, max_length: int | None = None, trust_remote_code: bool = False) -> RewardTokenizer:
    """The tokenizer saved with a reward model (in its backbone folder, chat template included), set up for
    its backbone kind, at `max_length` or else the length the model was trained at."""
    spec = load_reward_spec(folder)
    cfg = ModelConfig(name_or_path=f"{folder}/backbone", trust_remote_code=trust_remote_code)
    return RewardTokenizer(load_tokenizer(cfg), spec.kind, max_length or spec.max_length or DEFAULT_MAX_LENGTH)


class RewardScorer:
    """Scalar-head reward models; several objectives are combined by `weights` (default their mean)."""

    def __init__(self, folder: str, weights: list[float] | None = None, max_length: int | None = None) -> None:
        self.model = load_reward_model(folder)
        if self.model.spec.head != "scalar":
            raise ValueError(f"{folder}: a {self.model.spec.head} head compares responses; it has no reward per response")
        k = len(self.model.spec.objectives)
        self.weights = torch.tensor(weights if weights is not None else [1.0 / k] * k)
        self.tok = load_reward_tokenizer(folder, max_length)

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], batch_size: int = 128) -> list[float]:
        return [r for i in range(0, len(prompts), batch_size) for r in
                (self.model(self.tok.batch(prompts[i:i + batch_size], responses[i:i + batch_size])) @ self.weights).tolist()]

    def score_one(self, prompt: str, response: str) -> float:
        return self.score([prompt], [response])[0]
