"""The training loop: gradient accumulation, exact resume, non-finite steps, outputs that load, references."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from prefalign.config import DataConfig, LossTerm, ModelConfig, ReferenceConfig, TrainConfig, TrainerConfig
from prefalign.data.collate import collate_pairs
from prefalign.losses import build_losses
from prefalign.models.reference import DisabledAdapterReference, FrozenCopyReference, PrecomputedReference
from prefalign.training.loop import accumulate_gradients
from prefalign.training.metrics import read_metrics
from prefalign.training.objectives import PairObjective
from prefalign.training.preference import prepare_data, train_preference


def make_config(model_dir, data_file, out, **trainer):
    defaults = dict(output_dir=str(out), batch_size=2, max_steps=6, lr=1e-3, progress=False, seed=3)
    return TrainConfig(model=ModelConfig(name_or_path=str(model_dir)),
                       data=DataConfig(train=str(data_file), eval_fraction=0.0, max_length=64),
                       loss=[LossTerm(name="dpo", beta=0.1)], trainer=TrainerConfig(**(defaults | trainer)))


def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir, pairs_file):
    cfg = make_config(tiny_model_dir, pairs_file, "unused")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = prepare_data(cfg.data, tok, 0).train
    assert len(pairs) == 8
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    objective = PairObjective(build_losses([LossTerm(name="dpo", beta=0.5), LossTerm(name="sft", weight=0.3)]),
                                    FrozenCopyReference.copy_of(AutoModelForCausalLM.from_pretrained(tiny_model_dir)))
    # Perturb the policy so that it differs from the reference and DPO's gradient is not trivial.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    pad = tok.pad_token_id

    def grads(groups):
        model.zero_grad()
        batches = [collate_pairs([pairs[i] for i in g], g, pad) for g in groups]
        loss, _, _ = accumulate_gradients(model, objective, batches)
        return loss, {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_one, one = grads([list(range(8))])
    loss_four, four = grads([[0, 1], [2, 3], [4, 5], [6, 7]])
    assert loss_one == pytest.approx(loss_four, rel=1e-5)
    for name in one:
        torch.testing.assert_close(one[name], four[name], rtol=1e-4, atol=1e-6, msg=name)


def test_batch_8_equals_4_micro_batches_of_2_end_to_end(tiny_model_dir, pairs_file, tmp_path):
    a = train_preference(make_config(tiny_model_dir, pairs_file, tmp_path / "a", batch_size=8, grad_accum=1, max_steps=3))
    b = train_preference(make_config(tiny_model_dir, pairs_file, tmp_path / "b", batch_size=2, grad_accum=4, max_steps=3))
    wa, wb = load_file(a.outputs["model"] / "model.safetensors"), load_file(b.outputs["model"] / "model.safetensors")
    # Summation order differs between one batch and 4 micro-batches, and Adam divides by sqrt(v): an embedding row
    # whose gradient is near 0 turns float noise into up to ~1.5e-6 of weight (measured), against steps that
    # move every tensor by 2e-3 or more. 1e-5 is 0.5% of that; a wrong pair or normalisation moves far more.
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5)
    la, lb = read_metrics(a.run_dir), read_metrics(b.run_dir)
    assert [m["loss"] for m in la] == pytest.approx([m["loss"] for m in lb], rel=1e-4)


def _weights(run_dir):
    return load_file(run_dir / "model" / "model.safetensors")


def interrupt_at(step, config, out):
    """Train with `config(out)` until `step`, interrupted right after that step's checkpoint."""

    def stop(done, metrics):
        if done == step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_preference(config(out), on_step=stop)


def assert_same_weights(run_a, run_b):
    wa, wb = _weights(run_a), _weights(run_b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def assert_resume_is_exact(config, tmp_path, straight, at=3, check_interrupted=None):
    """Interrupt `config` at step `at`, resume it, and compare weights and loss curve with `straight`;
    `check_interrupted(run_dir)` inspects the interrupted run before the resume."""
    resumed = tmp_path / "resumed"
    interrupt_at(at, config, resumed)
    if check_interrupted is not None:
        check_interrupted(resumed)
    train_preference(config(resumed), resume=True)
    assert_same_weights(straight.run_dir, resumed)
    assert [m["loss"] for m in read_metrics(straight.run_dir)] == [m["loss"] for m in read_metrics(resumed)]


def test_resume_after_kill_is_bitwise_exact(tiny_model_dir, pairs_file, tmp_path):
    straight = train_preference(make_config(tiny_model_dir, pairs_file, tmp_path / "straight", save_every=3))
    killed = tmp_path / "killed"
    # A real SIGKILL at step 3, right after the checkpoint: no cleanup, no final export.
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.getcwd()!r})
        from tests.test_training import make_config
        from prefalign.training.preference import train_preference
        def kill(step, metrics):
            if step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        train_preference(make_config({str(tiny_model_dir)!r}, {str(pairs_file)!r}, {str(killed)!r}, save_every=3), on_step=kill)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert not (killed / "model").exists() and (killed / "checkpoints" / "step-00000003").exists()
    resumed = train_preference(make_config(tiny_model_dir, pairs_file, killed, save_every=3), resume=True)
    assert resumed.loop.steps == 6
    ws, wr = _weights(straight.run_dir), _weights(killed)
    assert ws.keys() == wr.keys()
    for name in ws:
        assert torch.equal(ws[name], wr[name]), name
    assert [m["step"] for m in read_metrics(killed)] == [1, 2, 3, 4, 5, 6]
    assert [m["loss"] for m in read_metrics(killed)] == [m["loss"] for m in read_metrics(straight.run_dir)]


def test_keep_last_checkpoints_and_no_temporaries(tiny_model_dir, pairs_file, tmp_path):
    run = train_preference(make_config(tiny_model_dir, pairs_file, tmp_path / "r", save_every=1, keep_last=2))
    names = sorted(p.name for p in (run.run_dir / "checkpoints").iterdir())
    assert names == ["step-00000005", "step-00000006"]
    assert not [p for p in run.run_dir.rglob("*") if p.name.startswith(".tmp")]


class NaNOnSteps(PairObjective):
    """Returns a NaN loss on chosen calls, to exercise the non-finite guard."""

    def __init__(self, inner, bad_calls):
        super().__init__(inner.losses, inner.reference)
        self.calls, self.bad_calls = 0, bad_calls

    def loss(self, model, batch):
        self.calls += 1
        loss, metrics = super().loss(model, batch)
        return (loss * float("nan"), metrics) if self.calls in self.bad_calls else (loss, metrics)


def _loop_inputs(tiny_model_dir, pairs_file):
    from prefalign.training.loop import LoopData

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = prepare_data(DataConfig(train=str(pairs_file), eval_fraction=0), tok, 0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    objective = PairObjective(build_losses([LossTerm(name="dpo")]), FrozenCopyReference.copy_of(model))
    return model, objective, LoopData(data.train, lambda items, idx: collate_pairs(items, idx, tok.pad_token_id))


def test_non_finite_step_is_skipped_and_counted(tiny_model_dir, pairs_file, tmp_path):
    from prefalign.training.loop import train_loop

    model, objective, data = _loop_inputs(tiny_model_dir, pairs_file)
    result = train_loop(model, NaNOnSteps(objective, {2}), data,
                        TrainerConfig(batch_size=2, max_steps=4, progress=False, lr=1e-3), tmp_path)
    assert result.skipped_steps == 1 and result.steps == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [m["skipped_steps"] for m in read_metrics(tmp_path)] == [0, 1, 1, 1]


def test_stops_after_too_many_non_finite_steps(tiny_model_dir, pairs_file, tmp_path):
    from prefalign.training.loop import TrainingDiverged, train_loop

    model, objective, data = _loop_inputs(tiny_model_dir, pairs_file)
    with pytest.raises(TrainingDiverged, match="3 steps in a row had a non-finite loss"):
        train_loop(model, NaNOnSteps(objective, set(range(2, 100))), data,
                   TrainerConfig(batch_size=2, max_steps=10, progress=False, max_bad_steps=3), tmp_path)


def test_outputs_load_with_from_pretrained(tiny_model_dir, pairs_file, tmp_path):
    run = train_preference(make_config(tiny_model_dir, pairs_file, tmp_path / "r", max_steps=2))
    loaded = AutoModelForCausalLM.from_pretrained(run.outputs["model"])
    tok = AutoTokenizer.from_pretrained(run.outputs["model"])
    ids = tok("review the red lamp . the lamp is great .", return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.allclose(loaded(ids).logits, base(ids).logits)  # it trained
    saved = json.loads(json.dumps(__import__("yaml").safe_load((run.run_dir / "config.yaml").read_text())))
    assert saved["loss"] == [{"name": "dpo", "weight": 1.0, "beta": 0.1}]
    assert (run.outputs["model"] / "prefalign_config.yaml").exists()


def test_lora_adapter_and_disabled_adapter_reference(tiny_model_dir, pairs_file, tmp_path):
    from peft import PeftModel

    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "lora", max_steps=3, lr=1e-2)
    cfg.model.lora = {"r": 4, "alpha": 8}
    run = train_preference(cfg)
    assert set(run.outputs) == {"model", "adapter"}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    base_logits = base(ids).logits
    with_adapter = PeftModel.from_pretrained(base, run.outputs["adapter"])
    merged = AutoModelForCausalLM.from_pretrained(run.outputs["model"])
    torch.testing.assert_close(with_adapter(ids).logits, merged(ids).logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(merged(ids).logits, base_logits)
    # The reference of a LoRA run is the same model with the adapter switched off: the base.
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = prepare_data(cfg.data, tok, 0).train
    batch = collate_pairs(pairs[:4], [0, 1, 2, 3], tok.pad_token_id)
    ref = DisabledAdapterReference(with_adapter).logps(batch)
    torch.testing.assert_close(ref, FrozenCopyReference(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).logps(batch))


def test_precomputed_reference_equals_frozen_copy(tiny_model_dir, pairs_file):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = prepare_data(DataConfig(train=str(pairs_file), eval_fraction=0), tok, 0).train
    copy_ref = FrozenCopyReference(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    batches = [collate_pairs(pairs[i:i + 3], list(range(i, min(i + 3, 8))), tok.pad_token_id) for i in range(0, 8, 3)]
    pre = PrecomputedReference.compute(copy_ref, batches, 8)
    shuffled = collate_pairs([pairs[5], pairs[1]], [5, 1], tok.pad_token_id)
    torch.testing.assert_close(pre.logps(shuffled), copy_ref.logps(shuffled))


@pytest.mark.parametrize("kind", ["copy", "precomputed"])
def test_reference_kinds_train_the_same(tiny_model_dir, pairs_file, tmp_path, kind):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / kind, max_steps=2)
    cfg.reference = ReferenceConfig(kind=kind)
    run = train_preference(cfg)
    assert read_metrics(run.run_dir)[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1


def test_bfloat16_policy_trains(tiny_model_dir, pairs_file, tmp_path):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "bf16", max_steps=2)
    cfg.model.dtype = "bfloat16"
    run = train_preference(cfg)
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in read_metrics(run.run_dir))
    assert load_file(run.outputs["model"] / "model.safetensors")["model.embed_tokens.weight"].dtype == torch.bfloat16


def test_eval_split_and_metrics_logged(tiny_model_dir, pairs_file, tmp_path):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "ev", max_steps=4, eval_every=2)
    cfg.data.eval_fraction = 0.25
    run = train_preference(cfg)
    assert len(run.data.eval) == 2 and len(run.data.train) == 6
    metrics = read_metrics(run.run_dir)
    for key in ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "grad_norm", "lr", "tokens_per_s"]:
        assert key in metrics[0], key
    assert [m["step"] for m in metrics if "eval/loss" in m] == [2, 4]
