"""Every example config ships in the package, names its command, validates against that command's schema,
and the ones for `train` and `rm train` run a step on a tiny local model; `prefalign init` copies one."""

from fnmatch import fnmatch
from pathlib import Path

import pytest
import tomllib
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.config.examples import EXAMPLES_DIR, example_command, schema_for, shipped_examples
from prefalign.config.loading import load_config
from tests.conftest import PAIRS, write_jsonl

EXAMPLES = shipped_examples()
ONE_STEP = [name for name, path in EXAMPLES.items() if example_command(path) in ("train", "rm train")]


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
