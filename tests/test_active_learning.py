"""Active preference learning (Muldrew et al. 2024): the acquisition against hand-computed values, the
labellers, and `prefalign data active` end to end (it asks only about the pairs the acquisition picks)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.data.loading import read_pairs
from prefalign.selection.labellers import build_labeller, oriented
from prefalign.selection.scores import pair_scores
from prefalign.selection.selectors import SELECTORS, PairScores
from prefalign.toy.gold_reward import gold_reward

from .conftest import PAIRS, write_jsonl


def test_acquisition_takes_high_entropy_prompts_then_the_most_certain_pairs():
    entropy = np.array([9.0, 8.0, 7.0, 1.0, 6.0, 0.5])
    implicit = np.array([0.1, -2.0, 1.0, 5.0, 0.0, -4.0])  # b (d_1 - d_2)
    got = SELECTORS["active"].fn(PairScores(6, implicit=implicit, entropy=entropy), 2, 0, oversample=2.0)
    certainty = np.abs(1 / (1 + np.exp(-implicit)) - 0.5)
    np.testing.assert_allclose(got.columns["certainty"], certainty)
    # the 4 highest entropies are pairs 0, 1, 2, 4; of those, |s(h) - 1/2| is highest for 1 (h=-2), then 2 (h=1)
    assert got.kept.tolist() == [1, 2]
    assert np.isnan(got.score[3]) and np.isnan(got.score[5])  # 3 and 5 are certain but never in the entropy pool
    assert SELECTORS["active"].fn(PairScores(6, implicit=implicit, entropy=entropy), 2, 0, oversample=1.0) \
        .kept.tolist() == [0, 1]


def test_labellers_and_orientation():
    rows = [{"prompt": PAIRS[0]["prompt"], "chosen": PAIRS[0]["rejected"], "rejected": PAIRS[0]["chosen"]},
            {"prompt": PAIRS[1]["prompt"], "chosen": " it is 5 .", "rejected": " it is 5 ."}]
    labels = build_labeller("toy_judge", sigma=0.0)(rows)
    assert labels == [0.0, 0.5]  # "awful" loses to "great"; identical completions tie
    pairs, ties = oriented(rows, labels)
    assert ties == 1 and pairs == [{"prompt": PAIRS[0]["prompt"], "chosen": PAIRS[0]["chosen"],
                                    "rejected": PAIRS[0]["rejected"]}]
    assert build_labeller("file")(rows) == [1.0, 1.0]
    with pytest.raises(ValueError, match="choose from file, toy_judge, reward_model"):
        build_labeller("oracle")


def test_data_active_asks_only_about_the_acquired_pairs(tiny_model_dir, tmp_path):
    pool_rows = []
    for i in range(3):  # 24 distinct pairs, half of them with the better completion second
        for j, r in enumerate(PAIRS):
            swap = (i + j) % 2 == 1
            a, b = (r["rejected"], r["chosen"]) if swap else (r["chosen"], r["rejected"])
            pool_rows.append({"prompt": f"{r['prompt']} {i}", "chosen": a, "rejected": b})
    pool = write_jsonl(tmp_path / "pool.jsonl", pool_rows)
    out = tmp_path / "active"
    args = ["data", "active", str(pool), f"model.name_or_path={tiny_model_dir}", "data.train=unused",
            "data.eval_fraction=0", "trainer.max_steps=2", "trainer.batch_size=2", "trainer.lr=1e-2",
            "trainer.progress=false", "--out", str(out), "--rounds", "3", "--per-round", "4",
            "--labeller", "toy_judge", "--judge-sigma", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "active.json").read_text())
    assert [r["acquisition"] for r in report["rounds"]] == ["random", "active", "active"]
    labelled = [json.loads(line) for line in (out / "labelled.jsonl").read_text().splitlines()]
    assert len(labelled) == report["rounds"][-1]["labelled"] == 12 - sum(r["ties"] for r in report["rounds"])
    assert all(gold_reward(r["prompt"], r["chosen"]) > gold_reward(r["prompt"], r["rejected"]) for r in labelled)
    assert len({r["prompt"] for r in labelled}) == len(labelled)  # no pair is bought twice
    # round 1 asked exactly what the acquisition picks with round 0's policy on round 1's candidates
    candidates = out / "round-1" / "candidates.jsonl"
    scores = pair_scores(str(candidates), read_pairs(str(candidates)), ("implicit", "entropy"), "active",
                         policy=report["rounds"][0]["policy"], reference=str(tiny_model_dir), max_length=512)
    picked = SELECTORS["active"].fn(scores, 4, 1).kept.tolist()
    rows = [json.loads(line) for line in candidates.read_text().splitlines()]
    round0 = {r["prompt"] for r in labelled[:report["rounds"][0]["labelled"]]}
    round1 = {r["prompt"] for r in labelled[len(round0):report["rounds"][1]["labelled"]]}
    assert round1 <= {rows[i]["prompt"] for i in picked} and not round0 & {r["prompt"] for r in rows}
    bad = CliRunner().invoke(app, args[:-6] + ["--rounds", "9", "--per-round", "4"])
    assert bad.exit_code == 2 and "ask for 36 pairs" in bad.output


def test_reward_model_labeller_follows_the_models_margins(tiny_model_dir, tmp_path):
    from prefalign.rewards.evaluate import score_with_reward_model
    from prefalign.rewards.train import train_reward_model

    from .test_reward_models import rm_config

    source = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    cfg = rm_config(tiny_model_dir, source, source, tmp_path / "rm", steps=2)
    cfg.trainer.batch_size = 4
    folder = str(train_reward_model(cfg).model_dir)
    margins = score_with_reward_model(folder, str(source)).margins
    labels = build_labeller("reward_model", folder=folder)(PAIRS)
    assert labels == [1.0 if m > 0 else 0.0 if m < 0 else 0.5 for m in margins.tolist()]
