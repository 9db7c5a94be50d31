"""Several processes: the data split across ranks, and DDP / FSDP2 runs under torchrun (gloo, CPU) that equal
one process at the same global batch, resume exactly, and whose checkpoints load in one process."""

import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from prefalign.config import TrainConfig, TrainerConfig
from prefalign.training.batch_sources import DatasetSource, rank_shares, split_step
from prefalign.training.metrics import read_metrics
from prefalign.training.preference import train_preference

from .conftest import PAIRS, write_jsonl


def test_rank_shares_partition_the_step():
    for n in range(0, 12):
        for world in (1, 2, 3, 4):
            shares = rank_shares(list(range(n)), world)
            assert sum(shares, []) == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_every_rank_runs_as_many_micro_batches_with_fillers_counted_zero():
    # 5 examples on 2 ranks in micro-batches of 2: rank 0 has [0, 1] [2], rank 1 has [3, 4] and a filler.
    assert split_step([0, 1, 2, 3, 4], 2, 0, 2) == ([[0, 1], [2]], 0)
    assert split_step([0, 1, 2, 3, 4], 2, 1, 2) == ([[3, 4], [3]], 1)
    # A step smaller than the world: the empty rank computes a filler so that collectives stay in step.
    assert split_step([7], 4, 1, 2) == ([[7]], 1)


def test_dataset_source_ranks_partition_every_step_before_and_after_resume():
    cfg = TrainerConfig(batch_size=3, grad_accum=2, micro_batch_size=2, max_steps=9, seed=5)
    examples = list(range(20))

    def seen(rank, world, steps):
        source = DatasetSource(examples, lambda items, idx: idx, cfg, rank=rank, world=world)
        return {k: sum(source.step(k).counted, []) for k in steps}

    one = seen(0, 1, range(9))
    for world in (2, 3):
        # A fresh source per rank asked only for steps 4.. stands for a resumed run.
        for steps in (range(9), range(4, 9)):
            parts = [seen(r, world, steps) for r in range(world)]
            for k in steps:
                assert sum((p[k] for p in parts), []) == one[k]


# -- real processes ---------------------------------------------------------------------------------------

STEPS = 5


@pytest.fixture
def many_pairs(tmp_path):
    rows = [dict(r, prompt=f"{r['prompt']} ({i})") for i in range(3) for r in PAIRS]
    return write_jsonl(tmp_path / "pairs24.jsonl", rows)


def _config(model_dir, data, out, loss=None, **trainer) -> TrainConfig:
    t = dict(output_dir=str(out), batch_size=4, grad_accum=2, micro_batch_size=2, max_steps=STEPS, lr=1e-3,
             progress=False, seed=3, schedule="constant") | trainer
    return TrainConfig.model_validate({"model": {"name_or_path": str(model_dir)},
                                       "data": {"train": str(data), "eval_fraction": 0.0, "max_length": 64},
                                       "loss": loss or [{"name": "dpo", "beta": 0.1}], "trainer": t})


def _torchrun(cfg: TrainConfig, tmp_path, *args: str, strategy: str = "ddp",
              command: str = "train") -> subprocess.CompletedProcess:
    path = tmp_path / f"{os.path.basename(cfg.trainer.output_dir)}.yaml"
    raw = cfg.model_dump(mode="json")
    raw["distributed"]["strategy"] = strategy
    path.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "prefalign.cli.main", command, "-c", str(path), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _assert_same_run(a, b, steps=STEPS):
    la, lb = read_metrics(a), read_metrics(b)
    assert [m["step"] for m in la] == [m["step"] for m in lb] == list(range(1, steps + 1))
    for x, y in zip(la, lb):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)
        assert x["rewards/accuracies"] == pytest.approx(y["rewards/accuracies"], abs=1e-6)
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0, msg=k)


@pytest.fixture
def one_process_run(tiny_model_dir, many_pairs, tmp_path):
    return train_preference(_config(tiny_model_dir, many_pairs, tmp_path / "one")).run_dir


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_equal_one(tiny_model_dir, many_pairs, tmp_path, one_process_run, strategy):
    out = tmp_path / strategy
    _torchrun(_config(tiny_model_dir, many_pairs, out), tmp_path, strategy=strategy)
    _assert_same_run(one_process_run, out)
    logged = read_metrics(out)
    assert {m["world_size"] for m in logged} == {2}
    assert yaml.safe_load((out / "config.yaml").read_text())["distributed"]["world_size"] == 2


@pytest.mark.slow
def test_kto_z0_is_taken_over_both_processes_under_fsdp2(tiny_model_dir, many_pairs, tmp_path):
    # KTO's z0 couples the step's examples: 1 process with micro-batches of 8 equals 2 sharded processes
    # with micro-batches of 2, because the loss sees the whole step (training/coupled.py).
    kto = [{"name": "kto", "beta": 0.5}]
    one = train_preference(_config(tiny_model_dir, many_pairs, tmp_path / "kto-one", kto, micro_batch_size=8)).run_dir
    two = tmp_path / "kto-two"
    _torchrun(_config(tiny_model_dir, many_pairs, two, kto), tmp_path, strategy="fsdp2")
    la, lb = read_metrics(one), read_metrics(two)
    assert len(la) == len(lb) == STEPS
    for x, y in zip(la, lb):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)
        assert x["kto/kl"] == pytest.approx(y["kto/kl"], abs=1e-6)
    wa, wb = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0, msg=k)


@pytest.mark.slow
def test_two_process_resume_and_a_sharded_checkpoint_resumed_in_one_process(tiny_model_dir, many_pairs, tmp_path,
                                                                             one_process_run):
    # DDP: stop after step 3 (its checkpoint), resume in 2 processes to step 5.
    ddp = tmp_path / "ddp-resumed"
    _torchrun(_config(tiny_model_dir, many_pairs, ddp, max_steps=3, save_every=3), tmp_path)
    _torchrun(_config(tiny_model_dir, many_pairs, ddp, save_every=3), tmp_path, "--resume")
    _assert_same_run(one_process_run, ddp)
    # FSDP2: the checkpoint written by 2 sharded processes continues in one plain process.
    fsdp = tmp_path / "fsdp-then-one"
    _torchrun(_config(tiny_model_dir, many_pairs, fsdp, max_steps=3, save_every=3), tmp_path, strategy="fsdp2")
    assert (fsdp / "checkpoints" / "step-00000003" / "trainable.safetensors").exists()
    train_preference(_config(tiny_model_dir, many_pairs, fsdp), resume=True)
    _assert_same_run(one_process_run, fsdp)


@pytest.mark.slow
def test_an_accelerate_fsdp_config_shards_and_is_never_downgraded(tiny_model_dir, many_pairs, tmp_path):
    cfg = _config(tiny_model_dir, many_pairs, tmp_path / "acc", max_steps=2)
    path = tmp_path / "acc.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    shipped = subprocess.run([sys.executable, "-m", "prefalign.cli.main", "config", "accelerate", "fsdp2_cpu_2proc"],
                             capture_output=True, text=True, check=True).stdout.strip()
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", shipped, "--main_process_port", "0",
           "-m", "prefalign.cli.main", "train", "-c", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "processes: 2 (fsdp2)" in done.stdout
    assert {m["world_size"] for m in read_metrics(tmp_path / "acc")} == {2}


def test_launcher_requests_prefalign_cannot_honour_are_refused(monkeypatch):
    from prefalign.config.schema import DistributedConfig
    from prefalign.training.distributed import start_processes

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    with pytest.raises(ValueError, match="mixed_precision fp16, but engine.autocast is off"):
        start_processes(DistributedConfig(), "off")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ValueError, match="DeepSpeed"):
        start_processes(DistributedConfig())
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="asks for FSDP but distributed.strategy is ddp"):
        start_processes(DistributedConfig(strategy="ddp"))


def test_rl_on_two_processes_equals_one(tiny_model_dir, tmp_path):
    """Every rank samples the whole rollout with the same seeds and trains on its share of the groups."""
    from prefalign.config.schema import RLTrainConfig
    from prefalign.rl.recipe import train_rl

    def config(out):
        return RLTrainConfig.model_validate({
            "model": {"name_or_path": str(tiny_model_dir)}, "loss": [{"name": "ppo_clip"}],
            "rl": {"prompts": "toy", "group_size": 3, "max_new_tokens": 8, "minibatches": 2,
                   "rewards": [{"name": "length"}], "kl": {"coef": 0.05, "placement": "reward"}},
            "trainer": {"output_dir": str(out), "max_steps": 4, "batch_size": 2, "grad_accum": 2,
                        "micro_batch_size": 1, "lr": 1e-3, "schedule": "constant", "progress": False, "seed": 3}})

    one = train_rl(config(tmp_path / "rl-one")).run_dir
    two = tmp_path / "rl-two"
    _torchrun(config(two), tmp_path, command="rl")
    la, lb = read_metrics(one), read_metrics(two)
    assert [m["loss"] for m in la] == pytest.approx([m["loss"] for m in lb], abs=1e-6)
    assert [m["rl/reward_mean"] for m in la] == [m["rl/reward_mean"] for m in lb]
    assert lb[0]["world_size"] == 2
    wa, wb = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0, msg=k)
