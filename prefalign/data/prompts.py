"""Prompt lists for sampling: a file or dataset whose records have a string `prompt` field."""

from __future__ import annotations

from prefalign.data.errors import DataError
from prefalign.data.readers import read_records


def read_prompts(source: str, split: str = "train") -> list[str]:
    prompts = []
    for record in read_records(source, split):
        prompt = record.fields.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(record.ref, "prompt", "expected a non-empty string", "bad_prompt")
        prompts.append(prompt)
    if not prompts:
        raise DataError(source, None, "no prompts", "empty")
    return prompts


def cycling_slice(prompts: list[str], cursor: int, n: int) -> list[str]:
    """The n prompts from position `cursor` on, starting over at the end: how online and RL sources walk
    their prompts (the cursor is what their checkpoints keep)."""
    return [prompts[(cursor + i) % len(prompts)] for i in range(n)]
