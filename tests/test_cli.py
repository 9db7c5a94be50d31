"""The command line: useful help, clear errors with exit status 2, working subcommands."""

import json

import pytest
from typer.testing import CliRunner

from prefalign.cli.main import app

from .conftest import write_jsonl

runner = CliRunner()


@pytest.mark.parametrize("args", [[], ["train"], ["quickstart"], ["data"], ["data", "validate"], ["toy"],
                                  ["toy", "build-base"], ["toy", "make-pairs"], ["config", "show"], ["losses"], ["zoo"]])
def test_every_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and "--help" in result.output and len(result.output.splitlines()) > 5


def test_train_misspelt_key_is_a_clear_error():
    result = runner.invoke(app, ["train", "trainer.lrr=1e-6"])
    assert result.exit_code == 2
    assert "unknown key 'trainer.lrr'; did you mean 'trainer.lr'?" in result.output
    assert "Traceback" not in result.output


def test_config_show_applies_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("trainer:\n  lr: 0.001\n")
    result = runner.invoke(app, ["config", "show", "-c", str(cfg), "trainer.batch_size=3", "loss.0.beta=0.5"])
    assert result.exit_code == 0
    assert "lr: 0.001" in result.output and "batch_size: 3" in result.output and "beta: 0.5" in result.output


def test_data_validate_reports_and_counts(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [
        {"prompt": "review the red lamp .", "chosen": " the lamp is great .", "rejected": " the lamp is awful ."},
        {"prompt": "review the red lamp .", "chosen": " the lamp is great .", "rejected": " the lamp is great ."},
        {"prompt": "review the red lamp .", "chosen": "", "rejected": " the lamp is awful ."},
    ])
    result = runner.invoke(app, ["data", "validate", str(path), "--tokenizer", "toy"])
    assert result.exit_code == 0, result.output
    assert "format: standard; 1 valid examples" in result.output
    assert "3 rows read, 2 skipped" in result.output and "identical_pair" in result.output
    assert "1 tokenized" in result.output


def test_data_validate_error_mode_names_row(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": " a"}])
    result = runner.invoke(app, ["data", "validate", str(path), "--on-bad-row", "error", "--format", "standard"])
    assert result.exit_code == 2
    assert "d.jsonl, line 1, field 'rejected': missing" in result.output


def test_train_runs_from_the_cli(tiny_model_dir, pairs_file, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", f"model.name_or_path={tiny_model_dir}", f"data.train={pairs_file}",
                                 "data.eval_fraction=0", f"trainer.output_dir={out}", "trainer.max_steps=2",
                                 "trainer.batch_size=4", "trainer.progress=false", "loss=[{name: ipo, beta: 0.5}]"])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "config.json").exists()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2


def test_losses_lists_registry():
    result = runner.invoke(app, ["losses"])
    assert result.exit_code == 0
    for name in ["dpo", "ipo", "robust_dpo", "hinge", "sft"]:
        assert name in result.output
