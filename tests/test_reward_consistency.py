"""Contrast Instructions consistency (Shen et al. 2023): the contrasts found in data, the two consistency
rates by hand, and `rm eval --contrast-similarity` on a toy reward model."""

import json

import pytest
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.data.errors import RowRef
from prefalign.data.examples import PreferencePair
from prefalign.rewards.consistency import Contrast, contrast_consistency, contrast_pairs
from prefalign.toy.reward_data import toy_reward_rows
from tests.conftest import write_jsonl


def pair(prompt, chosen, line):
    return PreferencePair(prompt, chosen, "no", RowRef("d.jsonl", line))


def test_contrasts_are_nearest_similar_prompts_with_different_responses():
    pairs = [pair("review the new phone .", "a new phone", 1), pair("review the old phone .", "an old phone", 2),
             pair("review the new phone .", "a later answer", 3),  # the first chosen response is the prompt's
             pair("list three fruits .", "apple", 4), pair("list three red fruits .", "apple", 5)]
    found = contrast_pairs(pairs, min_similarity=0.3)
    assert [(c.prompt_a, c.response_a, c.prompt_b, c.response_b) for c in found] == [
        ("review the new phone .", "a new phone", "review the old phone .", "an old phone")]  # fruits: same answer
    assert 0.3 <= found[0].similarity < 1
    assert contrast_pairs(pairs, min_similarity=0.99) == [] and contrast_pairs(pairs[:1], 0.1) == []


def test_consistency_counts_each_prompt_ranking_its_own_response_first():
    contrasts = [Contrast("xa", "ya", "xb", "yb", 0.8), Contrast("xc", "yc", "xd", "yd", 0.6)]
    reward = {("xa", "ya"): 2.0, ("xa", "yb"): 1.0, ("xb", "ya"): 0.0, ("xb", "yb"): 3.0,   # both kinds hold
              ("xc", "yc"): 2.0, ("xc", "yd"): 1.0, ("xd", "yc"): 5.0, ("xd", "yd"): 6.0}   # response side only

    def score(prompts, responses):
        return [reward[p, r] for p, r in zip(prompts, responses)]

    assert contrast_consistency(score, contrasts) == {
        "contrasts": 2, "response_consistency": 1.0, "instruction_consistency": 0.5, "both": 0.5,
        "mean_similarity": pytest.approx(0.7)}
    assert contrast_consistency(score, []) == {"contrasts": 0}


def test_rm_eval_reports_contrast_consistency(tmp_path):
    runner = CliRunner()
    train = write_jsonl(tmp_path / "train.jsonl", toy_reward_rows(400, seed=0))
    held = write_jsonl(tmp_path / "held.jsonl", toy_reward_rows(120, seed=1, held_out=True))
    out = tmp_path / "rm"
    result = runner.invoke(app, ["rm", "train", "model.name_or_path=toy", f"data.train={train}", "data.max_length=96",
                                 f"trainer.output_dir={out}", "trainer.max_steps=20", "trainer.batch_size=16",
                                 "trainer.progress=false"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["rm", "eval", str(held), "--model", str(out / "reward_model"),
                                 "--contrast-similarity", "0.5", "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    contrast = json.loads((tmp_path / "e.json").read_text())["contrast"]
    assert contrast["contrasts"] > 10 and contrast["mean_similarity"] >= 0.5
    assert 0 <= contrast["both"] <= min(contrast["response_consistency"], contrast["instruction_consistency"])
    result = runner.invoke(app, ["rm", "eval", str(held), "--policy", "toy", "--reference", "toy",
                                 "--contrast-similarity", "0.5"])
    assert result.exit_code == 2 and "it needs --model" in result.output
