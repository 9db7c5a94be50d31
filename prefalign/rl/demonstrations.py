"""Demonstrations for SRFT (`rl.demonstrations`): one expert completion per prompt, which joins the prompt's
rollout group next to the policy's own samples.

`toy` is the toy world's ideal answer (positive, on topic, correct; prefalign/toy/world.py), seeded per
prompt so it is the same in every rollout. Otherwise a file of records with a `prompt` and a `completion`
string; every prompt the run samples must have one."""

from __future__ import annotations

import random
import zlib

from prefalign.data.errors import DataError
from prefalign.data.readers import read_records
from prefalign.data.tokenize import CompletionTokenizer
from prefalign.toy.world import IDEAL, respond


def load_demonstrations(source: str, prompts: list[str]) -> dict[str, str]:
    """prompt -> demonstration text, for every prompt of the run."""
    if source == "toy":
        # a leading space, as the toy pairs write completions: the prompt then ends on a word boundary
        return {p: " " + respond(p, IDEAL, random.Random(zlib.crc32(p.encode()))) for p in prompts}
    found: dict[str, str] = {}
    for record in read_records(source):
        for field in ("prompt", "completion"):
            if not isinstance(record.fields.get(field), str) or not record.fields[field].strip():
                raise DataError(record.ref, field, "expected a non-empty string", "bad_demonstration")
        found.setdefault(record.fields["prompt"], record.fields["completion"])
    missing = [p for p in prompts if p not in found]
    if missing:
        raise DataError(source, "prompt", f"no demonstration for {len(missing)} of the run's prompts, e.g. "
                        f"{missing[0]!r}", "missing_demonstration")
    return {p: found[p] for p in prompts}


class DemonstrationIds:
    """A demonstration's completion token ids after the prompt ids the sampler used (EOS appended, as a
    sampled completion that stopped ends)."""

    def __init__(self, tokenizer: object, texts: dict[str, str]) -> None:
        self.encoder = CompletionTokenizer(tokenizer, max_length=1 << 20)
        self.texts = texts

    def __call__(self, prompt: str, prompt_ids: list[int]) -> list[int]:
        encoded = self.encoder.encode(prompt, self.texts[prompt], where="rl.demonstrations")
        if list(encoded.prompt_ids) != list(prompt_ids):
            raise ValueError(f"rl.demonstrations: the prompt {prompt!r} tokenizes differently for training and for "
                             "sampling, so its demonstration cannot join the sampled group")
        return list(encoded.completion_ids)
