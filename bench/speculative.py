"""What speculative sampling saves: plain sampling, prefalign's batched speculative sampling and transformers'
assisted generation (its speculative sampling, one prompt at a time), side by side in one invocation.

    python bench/speculative.py [--json OUT] [--target FOLDER --draft FOLDER] [--repeats 3]

By default the policy is the toy base (1.8M parameters) and the draft is built here by `toy build-draft`'s
recipe (a one-layer model, about 20x smaller). Every method samples at temperature 1, up to 48 new tokens per
held-out toy prompt (EOS allowed, so lengths vary: throughput is generated tokens per second), at batch 1
(16 prompts one after another) and batch 32. Each figure is the median of `--repeats` runs after one warm-up.
Also printed: how often the policy kept a draft token, and the tokens each row gained per policy forward pass
(plain sampling: 1). Output distributions are not compared here; tests/test_speculative.py does that."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.decoding.sampling import generate, left_pad, own_rng
from prefalign.decoding.speculative import speculative_generate
from prefalign.models.loading import TOY_BASE
from prefalign.toy.draft import build_draft
from prefalign.toy.world import split_prompts

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_cost import timed  # noqa: E402

NEW_TOKENS, KS = 48, (2, 4, 6)


def batches(prompts: list[str], size: int) -> list[list[str]]:
    return [prompts[i:i + size] for i in range(0, len(prompts), size)]


def plain(target: object, tok: object, groups: list[list[str]]) -> int:
    return sum(len(s.completion_ids) for i, g in enumerate(groups) for s in generate(target, tok, g, NEW_TOKENS, seed=i))


def speculative(target: object, draft: object, tok: object, groups: list[list[str]], k: int) -> tuple[int, float, float]:
    tokens = drafted = accepted = emitted = 0
    for i, g in enumerate(groups):
        out, stats = speculative_generate(target, draft, tok, g, NEW_TOKENS, k=k, seed=i)
        tokens += sum(len(s.completion_ids) for s in out)
        drafted, accepted, emitted = drafted + stats.drafted, accepted + stats.accepted, emitted + stats.emitted
    return tokens, accepted / max(drafted, 1), emitted / max(drafted / k, 1)


@torch.no_grad()
def assisted(target: object, draft: object, tok: object, prompts: list[str]) -> int:
    """transformers' speculative sampling (`assistant_model`, do_sample): batch 1 only."""
    tokens = 0
    for i, p in enumerate(prompts):
        ids, attn = left_pad(tok, [p])[1:]
        with own_rng(i, ids.device):
            out = target.generate(input_ids=ids, attention_mask=attn, assistant_model=draft, do_sample=True, top_k=0,
                                  max_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        tokens += out.shape[1] - ids.shape[1]
    return tokens


def run(target: object, draft: object, tok: object, repeats: int) -> list[dict]:
    held = split_prompts()[1]
    rows = []
    for size, prompts in ((1, held[:16]), (32, held[:64])):
        groups = batches(prompts, size)
        seconds, tokens = timed(lambda g=groups: plain(target, tok, g), repeats)
        base = tokens / seconds
        rows.append(dict(batch=size, method="plain sampling", tokens_per_s=base, ratio=1.0))
        for k in KS:
            seconds, (tokens, acceptance, per_pass) = timed(lambda g=groups, k=k: speculative(target, draft, tok, g, k),
                                                            repeats)
            rows.append(dict(batch=size, method=f"prefalign speculative, k={k}", tokens_per_s=tokens / seconds,
                             ratio=tokens / seconds / base, acceptance=acceptance, tokens_per_policy_pass=per_pass))
        if size == 1:
            seconds, tokens = timed(lambda p=prompts: assisted(target, draft, tok, p), repeats)
            rows.append(dict(batch=1, method="transformers assisted generation (sampling)",
                             tokens_per_s=tokens / seconds, ratio=tokens / seconds / base))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--target", default=str(TOY_BASE))
    parser.add_argument("--draft", help="default: built here by the toy draft recipe")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(args.target)
    target = AutoModelForCausalLM.from_pretrained(args.target).eval()
    with tempfile.TemporaryDirectory() as folder:
        draft = AutoModelForCausalLM.from_pretrained(args.draft or build_draft(Path(folder))).eval()
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in (("target", target), ("draft", draft))}
    rows = run(target, draft, tok, args.repeats)
    for r in rows:
        extra = (f"  kept {r['acceptance']:.2f}, {r['tokens_per_policy_pass']:.2f} tokens/row/pass"
                 if "acceptance" in r else "")
        print(f"batch {r['batch']:>2}  {r['method']:<45} {r['tokens_per_s']:8.0f} tok/s  x{r['ratio']:.2f}{extra}")
    if args.json:
        args.json.write_text(json.dumps(dict(machine=platform.processor() or platform.machine(),
                                             threads=torch.get_num_threads(), parameters=sizes, rows=rows), indent=1))


if __name__ == "__main__":
    main()
