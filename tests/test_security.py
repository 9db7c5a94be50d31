"""Untrusted folders run no code and unpickle nothing; candidates files call only functions the user names."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.config.schema import ModelConfig
from prefalign.models.loading import load_causal_lm, load_for_inference
from prefalign.models.pretrained import UnsafeFolderError

PACKAGE = Path(__file__).resolve().parent.parent / "prefalign"
EVIL = '''import pathlib
pathlib.Path({marker!r}).write_text("the folder's code ran")
from transformers import LlamaConfig, LlamaForCausalLM
class EvilConfig(LlamaConfig):
    model_type = "evil_llama"
class EvilModel(LlamaForCausalLM):
    config_class = EvilConfig
'''


def test_every_from_pretrained_goes_through_the_safe_loader():
    """A bare `X.from_pretrained(...)` would leave trust_remote_code unset (transformers then asks on stdin)
    and accept pickles; only models/pretrained.py may call it."""
    bare = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "pretrained.py" and path.parent.name == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                bare.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert bare == []


@pytest.fixture
def evil_folder(tmp_path, tiny_model_dir) -> tuple[Path, Path]:
    """A model folder whose config needs its own Python, which leaves a marker file when it runs."""
    folder, marker = tmp_path / "evil", tmp_path / "ran.txt"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config |= {"model_type": "evil_llama", "auto_map": {"AutoConfig": "evil.EvilConfig",
                                                        "AutoModelForCausalLM": "evil.EvilModel"}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL.format(marker=str(marker)))
    return folder, marker


def test_a_run_folders_config_cannot_turn_on_remote_code(tmp_path, evil_folder):
    folder, marker = evil_folder
    run = tmp_path / "someone-elses-run"
    (run / "checkpoints" / "step-1").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": str(folder),
                                                               "trust_remote_code": True}}))
    save_file({"x": torch.zeros(1)}, run / "checkpoints" / "step-1" / "trainable.safetensors")
    result = CliRunner().invoke(app, ["eval", "policies", "--policy", f"x={run}/checkpoints/step-1",
                                      "--baseline", str(folder), "--n-prompts", "1", "--out", str(tmp_path / "ev")],
                                input="y\n")
    assert result.exit_code == 2
    assert "--trust-remote-code" in result.output and "Traceback" not in result.output
    assert not marker.exists()
    with pytest.raises(UnsafeFolderError):
        load_for_inference(f"{run}/checkpoints/step-1")
    assert not marker.exists()


def test_decode_never_asks_on_stdin_whether_to_run_a_folders_code(tmp_path, evil_folder):
    folder, marker = evil_folder
    result = CliRunner().invoke(app, ["decode", "--strategy", "sample", "--model", str(folder), "--n-prompts", "1",
                                      "--out", str(tmp_path / "d.jsonl")], input="y\n")
    assert result.exit_code == 2 and "--trust-remote-code" in result.output
    assert not marker.exists() and not (tmp_path / "d.jsonl").exists()


def test_the_command_line_flag_runs_a_folders_code(evil_folder):
    folder, marker = evil_folder
    model = load_for_inference(str(folder), trust_remote_code=True)
    assert marker.exists() and type(model).__name__ == "EvilModel"


def test_pickle_only_weights_are_refused_unless_allowed(tmp_path, tiny_model_dir):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    weights = next(folder.glob("*.safetensors"))
    from safetensors.torch import load_file

    torch.save(load_file(weights), folder / "pytorch_model.bin")  # our own tensors: a test may write a pickle
    weights.unlink()
    with pytest.raises(UnsafeFolderError, match="pytorch_model.bin.*--allow-pickle"):
        load_causal_lm(ModelConfig(name_or_path=str(folder)))
    result = CliRunner().invoke(app, ["decode", "--strategy", "sample", "--model", str(folder), "--n-prompts", "1",
                                      "--out", str(tmp_path / "d.jsonl")])
    assert result.exit_code == 2 and "pickle" in result.output
    allowed = load_causal_lm(ModelConfig(name_or_path=str(folder), allow_pickle=True))
    reference = load_causal_lm(ModelConfig(name_or_path=str(tiny_model_dir)))
    for a, b in zip(allowed.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_python_candidates_call_only_functions_in_files_named_with_code(tmp_path):
    from prefalign.evaluation.judge_validation import load_candidates

    checks = tmp_path / "checks.py"
    checks.write_text("def short(prompt, output):\n    return len(output.split()) < 4\n")
    candidates = tmp_path / "candidates.yaml"
    with pytest.raises(ValueError, match="--code"):
        load_candidates([{"name": "sys", "python": "os:getcwd"}], str(candidates), [checks])
    with pytest.raises(ValueError, match="--code"):
        load_candidates([{"name": "short", "python": "checks.py:short"}], str(candidates), [])
    (short,) = load_candidates([{"name": "short", "python": "checks.py:short"}], str(candidates), [checks])
    assert short.name == "short"

    outputs = tmp_path / "outputs.jsonl"
    outputs.write_text("".join(json.dumps({"prompt": "p", "output": o}) + "\n" for o in ["a b", "a b c d e"]))
    grades = tmp_path / "grades.jsonl"
    grades.write_text("".join(json.dumps({"index": i, "pass": p}) + "\n" for i, p in [(0, True), (1, False)]))
    candidates.write_text(yaml.safe_dump([{"name": "short", "python": "checks.py:short"}]))
    args = ["judges", "validate", str(outputs), str(grades), str(candidates)]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--code" in refused.output
    ran = CliRunner().invoke(app, [*args, "--code", str(checks)])
    assert ran.exit_code == 0, ran.output
    assert "short" in ran.output
