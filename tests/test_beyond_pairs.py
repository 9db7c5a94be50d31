"""MODPO (and its front), DOVE's joint pairs and TPO's triples: formulas by hand, the data paths, training."""

import json

import pytest
import torch
from transformers import AutoTokenizer

from prefalign.config import DataConfig, LossTerm
from prefalign.data.collate import collate_pairs
from prefalign.data.errors import DataError
from prefalign.data.loading import load_examples, to_lists, to_pairs, to_unpaired
from prefalign.evaluation.modpo_sweep import SweepPoint, pareto_front
from prefalign.losses.inputs import ListLogps
from prefalign.training.metrics import read_metrics
from prefalign.training.preference import prepare_data, train_preference

from .conftest import PAIRS, write_jsonl
from .test_loss_family import logsig, pair, run, val
from .test_training import make_config

# -- MODPO ---------------------------------------------------------------------------------------------------


def test_modpo_by_hand_and_its_dpo_limit():
    lp = pair(extras={"brevity_chosen": torch.tensor([-1.0]), "brevity_rejected": torch.tensor([-3.0])})
    # h = 1.5, b = 0.1; margin = 0.5 * (-1 - -3) = 1.0; (0.15 - 1.0) / 0.5 = -1.7
    got = val("modpo", lp, beta=0.1, preference_weight=0.5, others={"brevity": 0.5})
    assert got == pytest.approx(-logsig(-1.7), rel=1e-6)
    assert val("modpo", lp, beta=0.1, preference_weight=1.0) == pytest.approx(val("dpo", lp, beta=0.1), rel=1e-6)


def test_modpo_names_the_columns_it_needs(tiny_model_dir, pairs_file, tmp_path):
    c = make_config(tiny_model_dir, pairs_file, tmp_path / "m")
    c.loss = [LossTerm(name="modpo", others={"safety": 0.3})]
    with pytest.raises(DataError, match="safety_chosen"):
        train_preference(c)


def test_pareto_front():
    pts = [SweepPoint({"w": 1.0}, {"a": 1.0, "b": 0.0}), SweepPoint({"w": 0.5}, {"a": 0.5, "b": 0.5}),
           SweepPoint({"w": 0.4}, {"a": 0.4, "b": 0.4}), SweepPoint({"w": 0.0}, {"a": 0.0, "b": 1.0})]
    assert [p.on_front for p in pareto_front(pts)] == [True, True, False, True]


# -- DOVE ----------------------------------------------------------------------------------------------------

JOINT = [{"chosen_prompt": r["prompt"], "chosen": r["chosen"], "rejected_prompt": PAIRS[(i + 1) % 8]["prompt"],
          "rejected": PAIRS[(i + 1) % 8]["rejected"], "margin": 1.0} for i, r in enumerate(PAIRS)]


def test_joint_pairs_are_read_tokenized_and_collated_with_their_own_prompts(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "joint.jsonl", JOINT)
    cfg = DataConfig(train=str(path), eval_fraction=0.0, max_length=64)
    loaded = load_examples(str(path), cfg)
    assert loaded.format == "joint"
    pairs = to_pairs(loaded, cfg)
    assert pairs[0].rejected_prompt == PAIRS[1]["prompt"] and pairs[0].extras == {"margin": 1.0}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenized = prepare_data(cfg, tok, 0).train
    first = tokenized[0]
    assert first.rejected_prompt_ids == tok(PAIRS[1]["prompt"])["input_ids"]
    batch = collate_pairs(tokenized[:2], [0, 1], tok.pad_token_id).tokens
    n = len(first.rejected_prompt_ids) + len(first.rejected_ids)
    assert batch.input_ids[2, :n].tolist() == first.rejected_prompt_ids + first.rejected_ids
    assert batch.completion_mask[2, len(first.rejected_prompt_ids):n].all()
    unpaired = to_unpaired(loaded, cfg)
    assert unpaired[1].prompt == PAIRS[1]["prompt"] and not unpaired[1].label
    with pytest.raises(DataError, match="rejected_prompt"):
        to_lists(loaded, cfg)


def test_joint_records_that_mix_strings_and_messages_are_located(tmp_path):
    bad = dict(JOINT[0], rejected_prompt=[{"role": "user", "content": "hi"}])
    path = write_jsonl(tmp_path / "bad.jsonl", [JOINT[1], bad])
    with pytest.raises(DataError) as err:
        load_examples(str(path), DataConfig(train=str(path)))
    assert "line 2," in str(err.value) and "rejected_prompt" in str(err.value)


def test_dove_is_dpo_on_joint_pairs_and_trains(tiny_model_dir, tmp_path):
    assert val("dove", beta=0.2) == pytest.approx(val("dpo", beta=0.2), rel=1e-7)
    c = make_config(tiny_model_dir, write_jsonl(tmp_path / "joint.jsonl", JOINT), tmp_path / "d", lr=1e-2)
    c.loss = [LossTerm(name="dove")]
    metrics = read_metrics(train_preference(c).run_dir)
    assert metrics[-1]["rewards/margins"] > metrics[0]["rewards/margins"]


# -- TPO -----------------------------------------------------------------------------------------------------


def test_tpo_by_hand():
    lists = ListLogps(logps=torch.tensor([[-2.0, -1.0, -3.0]]), n_tokens=torch.tensor([[2.0, 4.0, 5.0]]),
                      valid=torch.ones(1, 3, dtype=torch.bool))
    nll_gold = 1.0  # 2 / 2
    assert run("tpo", lists, beta=0.1, alpha=0.5).item() == pytest.approx(-logsig(0.1 * 2.0) + 0.5 * nll_gold, rel=1e-6)
    # TPO-L: means -0.25 and -0.6, margin 0.35, gamma 0.1
    got = run("tpo", lists, beta=2.0, alpha=0.0, length_normalize=True, gamma=0.1).item()
    assert got == pytest.approx(-logsig(2.0 * 0.35 - 0.1), rel=1e-6)
    with pytest.raises(ValueError, match="exactly three"):
        run("tpo", ListLogps(lists.logps[:, :2], lists.n_tokens[:, :2], lists.valid[:, :2]))


def test_triples_become_lists_of_three_and_pairs(tiny_model_dir, tmp_path):
    rows = [dict(r, gold=" the best answer .") for r in PAIRS]
    path = write_jsonl(tmp_path / "triples.jsonl", rows)
    cfg = DataConfig(train=str(path), eval_fraction=0.0, max_length=64)
    loaded = load_examples(str(path), cfg)
    assert loaded.format == "triple"
    assert to_lists(loaded, cfg)[0].responses == [" the best answer .", PAIRS[0]["chosen"], PAIRS[0]["rejected"]]
    assert to_pairs(loaded, cfg)[0].chosen == PAIRS[0]["chosen"]
    c = make_config(tiny_model_dir, path, tmp_path / "t", lr=1e-2)
    c.loss = [LossTerm(name="tpo")]
    metrics = read_metrics(train_preference(c).run_dir)
    assert metrics[-1]["tpo/nll_gold"] < metrics[0]["tpo/nll_gold"]
    assert metrics[-1]["tpo/margin"] > metrics[0]["tpo/margin"]


def test_toy_variants(tmp_path):
    from prefalign.evaluation.zoo import data_variant

    rows = [dict(r, score_chosen=1.0, score_rejected=0.0) for r in PAIRS]
    base = write_jsonl(tmp_path / "toy_pairs.jsonl", rows)
    joint = [json.loads(x) for x in data_variant(base, "joint", 0).read_text().splitlines()]
    assert len(joint) == 16 and sum(j["chosen_prompt"] != j["rejected_prompt"] for j in joint) == 8
    triples = [json.loads(x) for x in data_variant(base, "triples", 0).read_text().splitlines()]
    assert len(triples) == 8 and all(t["gold"].strip() for t in triples)


def test_the_rated_toy_variant_feeds_curry_dpos_curriculum(tmp_path, toy_tokenizer):
    from prefalign.config import DataConfig
    from prefalign.evaluation.zoo import data_variant
    from prefalign.training.preference import prepare_data
    from prefalign.training.schedules import curriculum_stages

    samples = [{"response": " the lamp is great .", "score": 2.0}, {"response": " the lamp is fine .", "score": 1.0},
               {"response": " the lamp is awful .", "score": -1.0}]
    rows = [dict(r, score_chosen=2.0, score_rejected=-1.0, samples=samples) for r in PAIRS]
    rated = data_variant(write_jsonl(tmp_path / "toy_pairs.jsonl", rows), "rated", 0)
    cfg = DataConfig(train=str(rated), eval_fraction=0.0, pairs={"rule": "all_pairs"})
    pairs = prepare_data(cfg, toy_tokenizer, 0).train
    assert len(pairs) == 24  # 3 pairs per prompt
    stages = curriculum_stages(pairs)
    assert len(stages) == 3 and all(pairs[i].extras["score_chosen"] - pairs[i].extras["score_rejected"] == 3.0
                                    for i in stages[0])


def test_modpo_sweep_trains_one_policy_per_weighting(tiny_model_dir, tmp_path):
    from prefalign.evaluation.modpo_sweep import sweep_modpo

    rows = [dict(r, brevity_chosen=-0.1 * len(r["chosen"].split()), brevity_rejected=-0.1 * len(r["rejected"].split()))
            for r in PAIRS]
    base = make_config(tiny_model_dir, write_jsonl(tmp_path / "p.jsonl", rows), tmp_path / "unused", max_steps=2)
    objectives = {"gold": lambda p, t: float("great" in t), "brevity": lambda p, t: -0.1 * len(t.split())}
    points = sweep_modpo(base, "gold", ["brevity"], [1.0, 0.5], [r["prompt"] for r in PAIRS[:3]], objectives,
                         tmp_path / "sweep")
    assert [p.weights for p in points] == [{"gold": 1.0, "brevity": 0.0}, {"gold": 0.5, "brevity": 0.5}]
    assert all(set(p.scores) == {"gold", "brevity"} for p in points) and any(p.on_front for p in points)
    assert len(json.loads((tmp_path / "sweep" / "front.json").read_text())) == 2
