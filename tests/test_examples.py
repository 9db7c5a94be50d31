"""Every example config ships in the package, names its command, validates against that command's schema,
and the ones for `train` and `rm train` run a step on a tiny local model; `prefalign init` copies one."""

import json
from fnmatch import fnmatch
from pathlib import Path

import pytest
import tomllib
import torch
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.config.examples import EXAMPLES_DIR, example_command, schema_for, shipped_examples
from prefalign.config.loading import load_config
from tests.conftest import PAIRS, write_jsonl

EXAMPLES = shipped_examples()
ONE_STEP = [name for name, path in EXAMPLES.items() if example_command(path) in ("train", "rm train", "sft")]


def test_there_is_an_example_per_method_family():
    assert {"dpo", "ipo", "kto", "orpo", "simpo", "rated", "ranked", "reward_model", "dpo_lora", "online_dpo",
            "rl/grpo", "rl/ppo", "rl/rloo"} <= set(EXAMPLES)


def test_every_example_ships_in_the_package():
    globs = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["prefalign"]
    for path in EXAMPLES.values():
        inside = str(path.relative_to(EXAMPLES_DIR.parent))
        assert any(fnmatch(inside, g) for g in globs), inside


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_validates_against_its_commands_schema(name):
    load_config(EXAMPLES[name], [], schema=schema_for(example_command(EXAMPLES[name])))


def _data_for(name: str, tmp_path: Path) -> Path:
    if name == "rated":
        rows = [{"prompt": r["prompt"], "completions": [{"response": r["chosen"], "score": 9.0},
                                                        {"response": r["rejected"], "score": 2.0}]} for r in PAIRS]
    elif name == "ranked":
        rows = [{"prompt": r["prompt"], "responses": [r["chosen"], " fine .", r["rejected"]]} for r in PAIRS]
    else:
        rows = PAIRS
    return write_jsonl(tmp_path / f"{name.replace('/', '-')}.jsonl", rows)


@pytest.mark.parametrize("name", ONE_STEP)
def test_train_and_reward_examples_run_a_step_on_a_tiny_model(name, tiny_model_dir, tmp_path):
    command = example_command(EXAMPLES[name])
    out = tmp_path / "run"
    args = [*command.split(), "-c", str(EXAMPLES[name]), f"model.name_or_path={tiny_model_dir}",
            f"data.train={_data_for(name, tmp_path)}", "data.max_length=64", "data.eval_fraction=0",
            f"trainer.output_dir={out}", "trainer.max_steps=1", "trainer.batch_size=2", "trainer.eval_every=0"]
    if "qlora" in name and not torch.cuda.is_available():  # its refusal here: tests/test_real_model_recipes.py
        args.append("model.quantization=null")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / ("reward_model" if command == "rm train" else "model")).is_dir()


def test_init_lists_writes_and_never_overwrites(tmp_path):
    runner = CliRunner()
    listing = runner.invoke(app, ["init"])
    assert listing.exit_code == 0 and "rl/grpo" in listing.output and "kto" in listing.output
    target = tmp_path / "mine.yaml"
    assert runner.invoke(app, ["init", "kto", "--out", str(target)]).exit_code == 0
    assert target.read_text() == EXAMPLES["kto"].read_text()
    again = runner.invoke(app, ["init", "kto", "--out", str(target)])
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(app, ["init", "no-such-method"]).exit_code == 2


DECODE = sorted(name for name, path in EXAMPLES.items() if example_command(path) == "decode")
# Strategies whose example needs a model built first: a value model (made here with `prefalign value train`),
# a baseline policy (the toy base stands in) or a decoder reward model (only validated).
NEEDS_VALUE = {"decode/cd-token", "decode/cd-block", "decode/vas"}


def test_there_is_a_decode_example_per_strategy():
    from prefalign.decoding.strategies import STRATEGIES

    assert DECODE == sorted(f"decode/{name}" for name in STRATEGIES)
    for name in DECODE:
        assert load_config(EXAMPLES[name], [], schema=schema_for("decode")).strategy == name.split("/")[1]


@pytest.fixture(scope="module")
def value_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("value") / "value"
    result = CliRunner().invoke(app, ["value", "train", "--out", str(out), "--n-prompts", "2", "--samples", "2",
                                      "--steps", "2", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    assert (out / "head.safetensors").exists()
    return out


@pytest.mark.parametrize("name", [n for n in DECODE if n != "decode/args"])
def test_decode_examples_run_on_the_toy_model(name, tmp_path, request):
    out = tmp_path / "decoded.jsonl"
    extra = [f"out={out}", "n_prompts=2", "max_new_tokens=4", "k=2", "block=2", "horizon=2"]
    if name in NEEDS_VALUE:
        extra.append(f"value=[{request.getfixturevalue('value_folder')}]")
    if name == "decode/transfer-q":
        extra.append("baseline=toy")
    result = CliRunner().invoke(app, ["decode", "-c", str(EXAMPLES[name]), *extra])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["reward"], float) for r in rows)


def test_decode_options_win_over_the_config_and_code_flags_stay_on_the_command_line(tmp_path):
    out = tmp_path / "decoded.jsonl"
    args = ["decode", "-c", str(EXAMPLES["decode/sample"]), "max_new_tokens=4", "--n-prompts", "3", "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert len(out.read_text().splitlines()) == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: sample\ntrust_remote_code: true\n")
    result = CliRunner().invoke(app, ["decode", "-c", str(bad)])
    assert result.exit_code == 2 and "trust_remote_code" in result.output
