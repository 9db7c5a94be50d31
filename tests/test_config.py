import pytest

from prefalign.config import ConfigError, load_config, parse_overrides


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("trainer:\n  lr: 0.001\n  batch_size: 4\nloss:\n  - {name: ipo, beta: 0.5}\n  - {name: sft, weight: 0.2}\n")
    cfg = load_config(path, ["trainer.lr=1e-6", "loss.0.beta=0.25", "model.dtype=bfloat16"])
    assert cfg.trainer.lr == 1e-6 and cfg.trainer.batch_size == 4
    assert cfg.loss[0].name == "ipo" and cfg.loss[0].params() == {"beta": 0.25}
    assert cfg.loss[1].weight == 0.2
    assert cfg.model.dtype == "bfloat16"


def test_override_replaces_whole_list():
    cfg = load_config(None, ["loss=[{name: hinge, beta: 0.3}]"])
    assert [t.name for t in cfg.loss] == ["hinge"]


@pytest.mark.parametrize("override, key, suggestion", [
    ("trainer.lrr=1", "trainer.lrr", "trainer.lr"),
    ("modle.dtype=float32", "modle", "model"),
    ("data.max_lenght=12", "data.max_lenght", "data.max_length"),
])
def test_misspelt_key_names_key_and_suggests(override, key, suggestion):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert f"unknown key '{key}'" in str(err.value)
    assert f"did you mean '{suggestion}'" in str(err.value)


def test_misspelt_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trainer:\n  epocs: 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*\n.*unknown key 'trainer.epocs'; did you mean 'trainer.epochs'"):
        load_config(path)


def test_bad_value_is_explained():
    with pytest.raises(ConfigError, match="trainer.lr"):
        load_config(None, ["trainer.lr=-1"])
    with pytest.raises(ConfigError, match="model.dtype"):
        load_config(None, ["model.dtype=float8"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_overrides(["trainer.lr"])
    with pytest.raises(ConfigError, match="out of range"):
        load_config(None, ["loss.3.beta=1"])


def test_loss_params_are_checked_with_suggestions():
    from prefalign.losses import build_losses

    with pytest.raises(ConfigError, match="did you mean 'beta'"):
        build_losses(load_config(None, ["loss.0.betta=0.2"]).loss)
    with pytest.raises(ConfigError, match="did you mean 'dpo'"):
        build_losses(load_config(None, ["loss.0.name=dop"]).loss)
    with pytest.raises(ConfigError, match="loss.0.label_smoothing"):
        build_losses(load_config(None, ["loss.0.label_smoothing=0.7"]).loss)


@pytest.mark.parametrize("name", ["dpo.yaml", "dpo_lora.yaml", "dpo_ia3.yaml"])
def test_example_configs_load(name):
    from pathlib import Path

    from prefalign.losses import build_losses

    cfg = load_config(Path(__file__).parent.parent / "examples" / name)
    assert build_losses(cfg.loss)
