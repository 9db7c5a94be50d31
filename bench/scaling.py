"""Scaling: per-rank memory of each distributed option, computed and measured, and 1 vs 2 processes' throughput.

    python bench/scaling.py [--json OUT] [--steps 12]

Memory: for full fine-tuning with AdamW, a rank holds weights (P x bytes), gradients (P x bytes) and two
moments (2 P x bytes, torch keeps them in the weights' dtype), plus the reference (P x bytes for a frozen
copy; nothing for the disabled adapter or a precomputed table). DDP keeps all of it on every rank; FSDP2
divides all of it by the world size (between steps; a block's full weights exist only while it runs). The
script prints that model for a 7B Llama and checks it on the toy model and a 58.5M Llama by summing the bytes
of the tensors each rank really holds after one optimizer step under torchrun (2 processes, gloo).

Throughput: the same DPO run (toy base, 256 pairs, batch 16, 12 steps) in 1 process with 2 threads and in
2 DDP processes with 1 thread each, alternating in this one invocation; tokens/s over the steps after the
first. Run it alone: other work on the 2 cores distorts the ratio."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

LLAMA_7B = dict(params=6.74e9, hidden=4096, layers=32)
LLAMA_58M = dict(vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                 num_key_value_heads=8, max_position_embeddings=4096, tie_word_embeddings=False)


def state_bytes(params: float, bytes_per: int, world: int, strategy: str, reference: bool) -> dict[str, float]:
    """Per-rank bytes of weights, gradients, AdamW moments and the reference copy."""
    share = world if strategy == "fsdp2" else 1
    weights = params * bytes_per / share
    out = {"weights": weights, "gradients": weights, "optimizer": 2 * weights, "reference": weights if reference else 0.0}
    out["total"] = sum(out.values())
    return out


def activation_bytes(tokens: int, hidden: int, layers: int, bytes_per: int, checkpointing: bool) -> float:
    """Korthikanti et al. 2022 (eq. 2, attention scores not kept, as with SDPA/flash): 34 x tokens x hidden
    bytes per layer in 16-bit (scaled to `bytes_per`); with checkpointing only each block's input is kept."""
    per_layer = tokens * hidden * (bytes_per if checkpointing else 17 * bytes_per)
    return per_layer * layers


def table_7b() -> list[dict]:
    rows = []
    for strategy, world in (("ddp", 8), ("fsdp2", 8), ("fsdp2", 64)):
        for dtype, b in (("fp32", 4), ("bf16", 2)):
            state = state_bytes(LLAMA_7B["params"], b, world, strategy, reference=True)
            acts = {ck: activation_bytes(4096, LLAMA_7B["hidden"], LLAMA_7B["layers"], 2, ck) for ck in (False, True)}
            rows.append({"strategy": strategy, "world": world, "dtype": dtype,
                         **{k: v / 2**30 for k, v in state.items()},
                         "activations_4k_tokens": acts[False] / 2**30, "activations_4k_tokens_checkpointed": acts[True] / 2**30})
    return rows


# -- measured: the tensors a rank holds ---------------------------------------------------------------------

def local_bytes(tensors: list[torch.Tensor]) -> int:
    from torch.distributed.tensor import DTensor

    return sum((t.to_local() if isinstance(t, DTensor) else t).numel() * t.element_size() for t in tensors)


def child_memory(model_name: str, strategy: str) -> None:
    """Under torchrun: one DPO step, then the bytes this rank holds, as JSON on stdout (rank 0)."""
    from prefalign.config.schema import DistributedConfig, LossTerm, TrainerConfig
    from prefalign.data.collate import collate_pairs
    from prefalign.data.tokenize import TokenizedPair
    from prefalign.losses import build_losses
    from prefalign.models.reference import FrozenCopyReference
    from prefalign.training.distributed import start_processes
    from prefalign.training.loop import accumulate_gradients, build_optimizer
    from prefalign.training.objectives import PairObjective

    processes = start_processes(DistributedConfig(strategy=strategy))
    torch.manual_seed(0)
    model = build_model(model_name)
    params = sum(p.numel() for p in model.parameters())
    reference = FrozenCopyReference.copy_of(model)
    processes.place(reference.model)
    forward = processes.prepare(model)
    optimizer, _ = build_optimizer(list(model.named_parameters()), TrainerConfig(lr=1e-5), 10)
    vocab = model.config.vocab_size
    pairs = [TokenizedPair(list(range(5, 25)), list(range(30, 45)), list(range(50, 60)), None) for _ in range(2)]
    objective = PairObjective(build_losses([LossTerm(name="dpo")]), reference)
    accumulate_gradients(forward, objective, [collate_pairs(pairs, [0, 1], 0, packed=True)], processes)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    optimizer.step()
    moments = [t for s in optimizer.state.values() for k, t in s.items() if k in ("exp_avg", "exp_avg_sq")]
    held = {"weights": local_bytes(list(model.parameters())), "gradients": local_bytes(grads),
            "optimizer": local_bytes(moments), "reference": local_bytes(list(reference.model.parameters()))}
    if processes.is_main:
        computed = state_bytes(params, 4, processes.world, processes.strategy, reference=True)
        print(json.dumps({"model": model_name, "params": params, "vocab": vocab, "strategy": processes.strategy,
                          "world": processes.world, "measured": held, "computed": computed}))


def build_model(name: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from prefalign.models.loading import resolve_path

    if name == "toy":
        return AutoModelForCausalLM.from_pretrained(resolve_path("toy"))
    return LlamaForCausalLM(LlamaConfig(**LLAMA_58M))


def torchrun(args: list[str], threads: int = 1) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return done.stdout


# -- throughput ---------------------------------------------------------------------------------------------

def write_run_config(root: Path, steps: int, processes: int) -> Path:
    from tests.conftest import PAIRS

    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(dict(r, prompt=f"{r['prompt']} ({i})")) + "\n" for i in range(32) for r in PAIRS))
    cfg = {"model": {"name_or_path": "toy"}, "data": {"train": str(data), "eval_fraction": 0.0, "max_length": 128},
           "loss": [{"name": "dpo", "beta": 0.1}],
           "trainer": {"output_dir": str(root / f"run-{processes}"), "batch_size": 16, "max_steps": steps,
                       "lr": 1e-4, "progress": False, "schedule": "constant"}}
    path = root / f"run-{processes}.yaml"
    path.write_text(json.dumps(cfg))
    return path


def tokens_per_s(run_dir: Path) -> float:
    from prefalign.training.metrics import read_metrics

    rows = read_metrics(run_dir)[1:]
    return sum(r["tokens_per_s"] for r in rows) / len(rows)


def throughput(steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        one, two = write_run_config(root, steps, 1), write_run_config(root, steps, 2)
        env = dict(os.environ, OMP_NUM_THREADS="2")
        subprocess.run([sys.executable, "-m", "prefalign.cli.main", "train", "-c", str(one)], check=True, env=env,
                       capture_output=True, timeout=900)
        torchrun(["-m", "prefalign.cli.main", "train", "-c", str(two)])
        a, b = tokens_per_s(root / "run-1"), tokens_per_s(root / "run-2")
    return {"one_process_2_threads_tokens_per_s": a, "two_processes_1_thread_tokens_per_s": b, "ratio": b / a}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "STRATEGY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_memory(*args.child)
    measured = [json.loads(torchrun([__file__, "--child", m, s]).strip().splitlines()[-1])
                for m in ("toy", "58m") for s in ("ddp", "fsdp2")]
    for row in measured:
        print(f"{row['model']:>4} {row['strategy']:>5} x{row['world']}: " + ", ".join(
            f"{k} {row['measured'][k] / 2**20:.2f} MiB (computed {row['computed'][k] / 2**20:.2f})"
            for k in row["measured"]))
    for row in table_7b():
        print(f"7B {row['strategy']} x{row['world']} {row['dtype']}: {row['total']:.1f} GiB per rank (weights "
              f"{row['weights']:.1f}, gradients {row['gradients']:.1f}, AdamW {row['optimizer']:.1f}, reference "
              f"{row['reference']:.1f}); activations per 4k tokens {row['activations_4k_tokens']:.1f} GiB, "
              f"{row['activations_4k_tokens_checkpointed']:.2f} checkpointed")
    speed = throughput(args.steps)
    print(f"throughput: 1 process x 2 threads {speed['one_process_2_threads_tokens_per_s']:.0f} tokens/s, "
          f"2 DDP processes x 1 thread {speed['two_processes_1_thread_tokens_per_s']:.0f} tokens/s "
          f"(ratio {speed['ratio']:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"memory": measured, "llama_7b": table_7b(), "throughput": speed}, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
