"""`prefalign budget`: the split of a label budget, and the two stages chained (SFT model -> preference start)."""

import pytest
import yaml
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.toy.preference_data import demonstration_rows
from prefalign.training.budget import split_budget
from tests.conftest import PAIRS, write_jsonl


def test_split_budget_by_hand():
    assert split_budget(800, 0.1) == (80, 720)
    assert split_budget(7, 0.5) == (4, 3)  # round half to even: 3.5 -> 4
    assert split_budget(10, 0.0) == (0, 10) and split_budget(10, 1.0) == (10, 0)


@pytest.mark.parametrize("fraction, stages", [(0.25, ("sft", "preference")), (1.0, ("sft",)), (0.0, ("preference",))])
def test_budget_runs_sft_then_preference_from_the_sft_model(tmp_path, fraction, stages):
    demos = write_jsonl(tmp_path / "demos.jsonl", demonstration_rows(20))
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS * 4)
    out = tmp_path / "budget"
    args = ["budget", "labels=8", f"sft_fraction={fraction}", f"output_dir={out}", "sft.model.name_or_path=toy",
            f"sft.data.train={demos}", "sft.data.eval_fraction=0", "sft.trainer.max_steps=2", "sft.trainer.progress=false",
            "preference.model.name_or_path=toy", f"preference.data.train={pairs}", "preference.data.eval_fraction=0",
            "preference.trainer.max_steps=2", "preference.trainer.batch_size=2", "preference.trainer.progress=false"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    n_sft = round(8 * fraction)
    assert f"done: {n_sft} demonstrations, then {8 - n_sft} preference rows" in result.output
    assert {p.name for p in out.iterdir()} == set(stages)
    if stages == ("sft", "preference"):
        assert "data: 2 rows read" in result.output and "data: 6 rows read" in result.output
        started = yaml.safe_load((out / "preference" / "config.yaml").read_text())["model"]["name_or_path"]
        assert started == str(out / "sft" / "model")
