"""TR-DPO, sDPO and Curry-DPO: data plans, reference updates, and exact resume with an updated reference."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from prefalign.config import DataConfig, PairRule, ScheduleConfig
from prefalign.models.reference import FrozenCopyReference
from prefalign.training.data_order import shuffled_plan, stage_end_steps, staged_plan
from prefalign.training.metrics import read_metrics
from prefalign.training.preference import train_preference
from prefalign.training.schedules import ReferenceUpdates, chunk_stages

from .conftest import write_jsonl
from .test_training import assert_resume_is_exact, make_config


def test_plans():
    plain = shuffled_plan(10, 2, 2, seed=1)
    assert sorted(i for step in plain(0) for i in step) == list(range(10)) and plain(0) != plain(1)
    stages = [[0, 1, 2, 3, 4], [5, 6, 7], [8, 9]]
    steps = staged_plan(stages, 2, 1, seed=1)(0)
    assert [len(s) for s in steps] == [2, 2, 1, 2, 1, 2]  # no step straddles two stages
    assert set(steps[0] + steps[1] + steps[2]) == {0, 1, 2, 3, 4} and set(steps[5]) == {8, 9}
    assert stage_end_steps(stages, 2, 1) == [3, 5, 6]
    assert sorted(sum(chunk_stages(7, 3, 0), [])) == list(range(7))


def test_soft_and_hard_updates(tiny_model_dir):
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ref = FrozenCopyReference(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)
    before = [p.clone() for p in ref.model.parameters()]
    hooks = ReferenceUpdates(ref, ScheduleConfig(reference_update="soft", update_every=2, mix=0.25), [], per_epoch=10)
    assert hooks.after_step(policy, 1) == {"reference/updates": 0.0}
    hooks.after_step(policy, 2)
    for b, r, p in zip(before, ref.model.parameters(), policy.parameters()):
        torch.testing.assert_close(r, 0.75 * b + 0.25 * p)
    hard = ReferenceUpdates(ref, ScheduleConfig(reference_update="hard", update_every=1), [], per_epoch=10)
    hard.after_step(policy, 1)
    assert all(torch.equal(r, p) for r, p in zip(ref.model.parameters(), policy.parameters()))


def test_sdpo_resets_the_reference_between_chunks(tiny_model_dir, pairs_file, tmp_path):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "sdpo", max_steps=4, lr=1e-2)
    cfg.schedule = ScheduleConfig(stages="chunks", num_chunks=2)
    metrics = read_metrics(train_preference(cfg).run_dir)
    assert [m["reference/updates"] for m in metrics] == [0, 1, 1, 2]
    # Right after the reset the policy is its own reference: the first step of chunk 2 sees zero margins.
    assert metrics[2]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert abs(metrics[1]["rewards/margins"]) > 1e-4


RATED = [{"prompt": p, "completions": [{"response": r, "score": s} for r, s in zip(resp, scores)]} for p, resp, scores in [
    ("review the red lamp .", [" the lamp is great .", " the lamp is lovely .", " the lamp is poor .", " the chair is awful ."], [3, 2.5, 1, 0]),
    ("list 2 fruits .", [" apple , pear .", " apple , cat .", " cat , dog ."], [2, 1, 0]),
]]


def test_curry_dpo_orders_pairs_from_easy_to_hard(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "rated.jsonl", RATED)
    cfg = make_config(tiny_model_dir, data, tmp_path / "curry", max_steps=3, batch_size=2)
    cfg.data = DataConfig(train=str(data), eval_fraction=0.0, max_length=64, pairs=PairRule(rule="all_pairs"))
    cfg.schedule = ScheduleConfig(stages="curriculum")
    run = train_preference(cfg)
    gaps = [p.extras["score_chosen"] - p.extras["score_rejected"] for p in run.data.train]
    assert len(gaps) == 9  # 6 + 3 pairs
    from prefalign.training.schedules import curriculum_stages

    stages = curriculum_stages(run.data.train)
    assert [sorted(gaps[i] for i in s) for s in stages[:2]] == [[2.0, 3.0], [1.0, 2.5]]
    assert [m["reference/updates"] for m in read_metrics(run.run_dir)] == [1, 2, 3]  # one-step stages


def test_curriculum_needs_several_pairs_per_prompt(tiny_model_dir, pairs_file, tmp_path):
    from prefalign.data.errors import DataError

    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "c")
    cfg.schedule = ScheduleConfig(stages="curriculum")
    with pytest.raises(DataError, match="score gap"):
        train_preference(cfg)


def test_tr_dpo_resumes_exactly(tiny_model_dir, pairs_file, tmp_path):
    def cfg(out):
        c = make_config(tiny_model_dir, pairs_file, out, save_every=3, lr=1e-2)
        c.schedule = ScheduleConfig(reference_update="soft", update_every=2, mix=0.5)
        return c

    assert_resume_is_exact(cfg, tmp_path, train_preference(cfg(tmp_path / "straight")))


def test_reference_updates_refuse_lora(tiny_model_dir, pairs_file, tmp_path):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "l")
    cfg.model.lora = {"r": 2}
    cfg.schedule = ScheduleConfig(reference_update="hard")
    with pytest.raises(ValueError, match="reference.kind=copy on a full"):
        train_preference(cfg)



def test_selective_dpo_orders_pairs_by_a_column_from_easy_to_hard(tiny_model_dir, tmp_path):
    from prefalign.data.errors import DataError
    from prefalign.training.schedules import column_stages

    from .conftest import PAIRS

    losses = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4][:len(PAIRS)]
    data = write_jsonl(tmp_path / "scored.jsonl", [dict(p, validation_loss=v) for p, v in zip(PAIRS, losses)])
    cfg = make_config(tiny_model_dir, data, tmp_path / "sel", max_steps=2, batch_size=2)
    cfg.data.eval_fraction = 0.0
    cfg.schedule = ScheduleConfig(stages="by_column", stage_column="validation_loss", num_chunks=2,
                                  reset_reference_per_stage=False)
    run = train_preference(cfg)
    loss = [p.extras["validation_loss"] for p in run.data.train]
    stages = column_stages(run.data.train, "validation_loss", 2)
    assert [loss[i] for s in stages for i in s] == sorted(loss)  # easiest (smallest loss) first
    assert max(loss[i] for i in stages[0]) <= min(loss[i] for i in stages[1])
    assert not any(m.get("reference/updates") for m in read_metrics(run.run_dir))  # one reference throughout
    with pytest.raises(DataError, match="field 'margin'"):
        column_stages(run.data.train, "margin", 2)
    with pytest.raises(ValueError, match="go together"):
        ScheduleConfig(stages="by_column")
