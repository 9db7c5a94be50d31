"""End to end on the toy task: the quickstart, and each foundation loss moving the gold reward."""

import json
import random

import pytest
from rich.console import Console

from prefalign.quickstart import run_quickstart
from tests.conftest import assert_report

SUMMARY_KEYS = {"base", "aligned", "win_rate", "win_rate_ci95", "kl", "steps", "seconds"}


def test_short_quickstart_writes_summary_and_report(tmp_path):
    summary = run_quickstart(tmp_path, steps=30, n_prompts=120, n_eval_prompts=40, console=Console(quiet=True))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary and SUMMARY_KEYS <= set(summary)
    assert {"gold_reward", "mean_length"} <= set(summary["base"]) and summary["steps"] == 30
    assert 0 <= summary["win_rate"] <= 1 and summary["kl"] > 0
    html = (tmp_path / "report.html").read_text()
    assert "win rate" in html
    assert_report(html, 10, ["Reward distributions", "Length vs reward", "Reward/KL frontier", "Example completions",
                             "Training curves"])
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    assert (tmp_path / "quickstart.yaml").exists()
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert {s["model"] for s in samples} == {"baseline", "aligned"} and len(samples) == 2 * summary["eval_prompts"]


@pytest.mark.slow
def test_default_quickstart_wins_at_least_70_percent(tmp_path):
    summary = run_quickstart(tmp_path, console=Console(quiet=True))
    assert summary["win_rate"] >= 0.70, summary
    assert summary["aligned"]["gold_reward"] > summary["base"]["gold_reward"] + 0.5


@pytest.fixture(scope="module")
def toy_pairs_file(tmp_path_factory):
    from prefalign.toy.preference_data import write_toy_pairs

    return write_toy_pairs(tmp_path_factory.mktemp("toy-data"), seed=0, n_prompts=1200)


@pytest.mark.slow
@pytest.mark.parametrize("loss", [  # plain DPO (beta 0.1) is the default quickstart's, tested above
    {"name": "dpo", "beta": 0.1, "label_smoothing": 0.1},
    {"name": "robust_dpo", "beta": 0.1, "label_smoothing": 0.1},
    {"name": "ipo", "beta": 0.05},  # IPO regresses the margin onto 1/(2 beta) = 10 nats
    {"name": "hinge", "beta": 0.5},
], ids=["cdpo", "robust_dpo", "ipo", "hinge"])
def test_each_loss_raises_the_gold_reward(toy_pairs_file, tmp_path, loss):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefalign.config import LossTerm
    from prefalign.evaluation.policy_eval import compare_policies
    from prefalign.models.loading import TOY_BASE
    from prefalign.quickstart import quickstart_config
    from prefalign.toy.gold_reward import gold_reward
    from prefalign.toy.world import split_prompts
    from prefalign.training.preference import train_preference

    cfg = quickstart_config(tmp_path, seed=0, steps=200)
    cfg.data.train = str(toy_pairs_file)
    cfg.loss = [LossTerm(**loss)]
    cfg.trainer.progress = False
    run = train_preference(cfg, console=Console(quiet=True))
    prompts = random.Random(0).sample(split_prompts()[1], 150)
    result = compare_policies(AutoModelForCausalLM.from_pretrained(str(run.outputs["model"])),
                              AutoModelForCausalLM.from_pretrained(str(TOY_BASE)),
                              AutoTokenizer.from_pretrained(str(TOY_BASE)), prompts, gold_reward, seed=1)
    assert result.win_rate > 0.6, result
    assert result.policy_reward > result.baseline_reward + 0.3, result


def test_zoo_writes_a_row_per_loss(tmp_path):
    from prefalign.evaluation.zoo import run_zoo

    doc = tmp_path / "losses.md"
    rows = run_zoo(tmp_path / "zoo", doc, steps=3, n_prompts=120, n_eval_prompts=20, only=["hinge", "simpo"],
                   console=Console(quiet=True))
    assert [r.label for r in rows] == ["hinge", "simpo"] and all(r.error is None for r in rows)
    table = doc.read_text()
    assert "| hinge |" in table and "| simpo |" in table and "do not edit by hand" in table
    assert all(0 <= r.preference_accuracy <= 1 and 0 <= r.win_rate <= 1 for r in rows)
