"""A broken run never exits 0 or leaves ruined weights as its last state; run folders never mix two runs;
only complete checkpoints are listed."""

from __future__ import annotations

import copy

import pytest
import torch
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.config import TrainerConfig
from prefalign.config.loading import ConfigError, load_config
from prefalign.losses import build_losses
from prefalign.training.checkpoint import list_checkpoints
from prefalign.training.loop import TrainingDiverged, train_loop
from prefalign.training.metrics import read_metrics
from prefalign.training.preference import train_preference
from prefalign.training.run_folder import RunFolderError
from prefalign.training.update_guard import count_nonfinite, restore, take_snapshot
from tests.test_training import NaNOnSteps, _loop_inputs, make_config

# -- non-finite hyper-parameters and updates ------------------------------------------------------------


@pytest.mark.parametrize("override, key", [("trainer.lr=.inf", "trainer.lr"), ("trainer.adam_eps=.nan", "adam_eps"),
                                           ("loss.0.weight=.nan", "loss.0.weight")])
def test_non_finite_hyper_parameters_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_a_non_finite_loss_parameter_is_a_config_error_on_the_command_line(tmp_path):
    cfg = load_config(None, ["loss.0.beta=.inf"])
    with pytest.raises(ConfigError, match="loss.0.beta"):
        build_losses(cfg.loss)
    result = CliRunner().invoke(app, ["train", "loss.0.beta=.inf", f"trainer.output_dir={tmp_path / 'r'}"])
    assert result.exit_code == 2 and "loss.0.beta" in result.output and "Traceback" not in result.output


def test_undo_restores_weights_and_adam_state_bitwise():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    params = list(model.parameters())

    def step():
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()

    step()
    before = [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())
    snapshot = take_snapshot(params, opt)
    step()
    restore(snapshot, params, opt)
    assert all(torch.equal(p, q) for p, q in zip(params, before[0]))
    after = opt.state_dict()["state"]
    for i, state in before[1]["state"].items():
        assert all(torch.equal(state[k], after[i][k]) for k in state)
    params[0].data[0, 0] = float("inf")
    assert count_nonfinite(params) == 1


def test_an_update_that_leaves_non_finite_weights_is_undone_and_a_run_with_no_applied_step_fails(
        tiny_model_dir, pairs_file, tmp_path):
    """lr=1e39 is a finite number whose AdamW step overflows float32: every update is undone, so nothing
    trained, and the run says so instead of exporting."""
    model, objective, data = _loop_inputs(tiny_model_dir, pairs_file)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainerConfig(batch_size=2, max_steps=3, progress=False, lr=1e39, schedule="constant", max_bad_steps=10,
                        on_nonfinite_update="undo")
    with pytest.raises(TrainingDiverged, match="no step was applied: all 3"):
        train_loop(model, objective, data, cfg, tmp_path / "undo")
    assert all(torch.equal(p, initial[n]) for n, p in model.named_parameters())
    assert [m["skipped_steps"] for m in read_metrics(tmp_path / "undo")] == [1, 2, 3]

    model, objective, data = _loop_inputs(tiny_model_dir, pairs_file)
    with pytest.raises(TrainingDiverged, match="step 1: the update left .* non-finite weights"):
        train_loop(model, objective, data, cfg.model_copy(update={"on_nonfinite_update": "stop"}), tmp_path / "stop")


def test_a_finite_but_absurd_update_stops_the_run_or_is_undone(tiny_model_dir, pairs_file, tmp_path):
    """lr=1e6 gives finite weights about a million times their size after one AdamW step: no non-finite
    value to catch, but the norm's growth is (trainer.max_weight_growth, default 10)."""
    model, objective, data = _loop_inputs(tiny_model_dir, pairs_file)
    cfg = TrainerConfig(batch_size=2, max_steps=2, progress=False, lr=1e6, schedule="constant")
    with pytest.raises(TrainingDiverged, match="step 1: the update multiplied the trained weights' norm by .*"
                                               "max_weight_growth=10"):
        train_loop(model, objective, data, cfg, tmp_path / "stop")
    model, objective, data = _loop_inputs(tiny_model_dir, pairs_file)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(TrainingDiverged, match="no step was applied"):
        train_loop(model, objective, data, cfg.model_copy(update={"on_nonfinite_update": "undo"}), tmp_path / "undo")
    assert all(torch.equal(p, initial[n]) for n, p in model.named_parameters())
    model, objective, data = _loop_inputs(tiny_model_dir, pairs_file)
    sane = cfg.model_copy(update={"lr": 1e-3})
    assert train_loop(model, objective, data, sane, tmp_path / "sane").skipped_steps == 0


def test_no_checkpoint_is_written_during_a_bad_streak_and_the_stopping_step_is_logged(
        tiny_model_dir, pairs_file, tmp_path):
    model, objective, data = _loop_inputs(tiny_model_dir, pairs_file)
    cfg = TrainerConfig(batch_size=2, max_steps=10, progress=False, lr=1e-3, save_every=1, keep_last=2,
                        max_bad_steps=3)
    with pytest.raises(TrainingDiverged, match="stopped at step 5"):
        train_loop(model, NaNOnSteps(objective, set(range(3, 100))), data, cfg, tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-00000001", "step-00000002"]
    assert read_metrics(tmp_path)[-1]["step"] == 5 and read_metrics(tmp_path)[-1]["skipped_steps"] == 3


def test_the_final_line_says_how_many_steps_were_skipped(tiny_model_dir, pairs_file, tmp_path, monkeypatch):
    import prefalign.training.preference as preference

    real = preference.OBJECTIVES["pairwise"]
    monkeypatch.setitem(preference.OBJECTIVES, "pairwise", lambda *a, **k: NaNOnSteps(real(*a, **k), {2}))
    result = CliRunner().invoke(app, ["train", f"model.name_or_path={tiny_model_dir}", f"data.train={pairs_file}",
                                      "data.eval_fraction=0", f"trainer.output_dir={tmp_path / 'r'}",
                                      "trainer.max_steps=3", "trainer.batch_size=2", "trainer.progress=false"])
    assert result.exit_code == 0, result.output
    assert "1 of 3 steps skipped" in result.output


# -- run folders ----------------------------------------------------------------------------------------


def test_a_run_folder_is_never_reused_by_another_run(tiny_model_dir, pairs_file, tmp_path):
    out = tmp_path / "r"
    train_preference(make_config(tiny_model_dir, pairs_file, out, max_steps=2, save_every=1))
    with pytest.raises(RunFolderError, match="already holds a run"):
        train_preference(make_config(tiny_model_dir, pairs_file, out, max_steps=2, seed=9))
    with pytest.raises(RunFolderError, match=r"trainer.seed: 3 -> 9"):
        train_preference(make_config(tiny_model_dir, pairs_file, out, max_steps=3, seed=9), resume=True)
    resumed = train_preference(make_config(tiny_model_dir, pairs_file, out, max_steps=3), resume=True)
    assert resumed.loop.steps == 3  # max_steps may change on resume
    train_preference(make_config(tiny_model_dir, pairs_file, out, max_steps=1, seed=9), overwrite=True)
    assert [m["step"] for m in read_metrics(out)] == [1]
    # The other run's checkpoints (steps 2 and 3) are gone; the new run wrote its own at its last step.
    assert [c.name for c in list_checkpoints(out / "checkpoints")] == ["step-00000001"]


def test_the_cli_refuses_a_used_folder_with_one_line(tiny_model_dir, pairs_file, tmp_path):
    args = ["train", f"model.name_or_path={tiny_model_dir}", f"data.train={pairs_file}", "data.eval_fraction=0",
            f"trainer.output_dir={tmp_path / 'r'}", "trainer.max_steps=1", "trainer.batch_size=2",
            "trainer.progress=false"]
    assert CliRunner().invoke(app, args).exit_code == 0
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output and "Traceback" not in again.output
    assert CliRunner().invoke(app, [*args, "--overwrite"]).exit_code == 0


# -- checkpoints ----------------------------------------------------------------------------------------


def test_only_complete_checkpoints_are_listed(tiny_model_dir, pairs_file, tmp_path):
    run = train_preference(make_config(tiny_model_dir, pairs_file, tmp_path / "r", max_steps=2, save_every=1))
    ckpts = run.run_dir / "checkpoints"
    (ckpts / "step-00000009").mkdir()  # what a kill during a prune by deletion used to leave
    (ckpts / "step-00000008.old").mkdir()  # what a kill between the renames of a replace leaves
    (ckpts / ".deleting-step-00000000").mkdir()
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-00000001", "step-00000002"]
    result = CliRunner().invoke(app, ["eval", "policies", "--policy", f"r={ckpts}", "--baseline", str(tiny_model_dir),
                                      "--n-prompts", "2", "--max-new-tokens", "4", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0, result.output


# -- the command line: one line and exit code 2 for bad input, the traceback only with --debug -----------

def _bad_inputs(tmp_path):
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("trainer: [lr: 1\n")
    folder = tmp_path / "a-folder"
    folder.mkdir(exist_ok=True)
    return [
        (["train", "-c", str(broken_yaml)], "broken.yaml"),
        (["train", "-c", str(folder)], "a-folder"),
        (["rm", "score", str(folder), str(folder)], "reward_config.json"),
        (["data", "validate", str(broken_yaml), "--format", "xml"], "format: Input should be 'auto'"),
    ]


def test_bad_input_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    for args, named in _bad_inputs(tmp_path):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert named in result.output and "Traceback" not in result.output, (args, result.output)
        assert "errors.pydantic.dev" not in result.output
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    debug = CliRunner().invoke(app, ["--debug", *_bad_inputs(tmp_path)[0][0]])
    assert debug.exit_code != 0 and debug.exception is not None and not isinstance(debug.exception, SystemExit)


# -- data files as spreadsheets and editors write them ----------------------------------------------------

def test_a_csv_with_a_byte_order_mark_keeps_its_prompts(tmp_path):
    from prefalign.data.readers import read_records

    path = tmp_path / "pairs.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,chosen,rejected\r\nhi,good,bad\r\n")
    (record,) = read_records(str(path))
    assert record.fields == {"prompt": "hi", "chosen": "good", "rejected": "bad"}
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_bytes(b'\xef\xbb\xbf{"prompt": "hi", "chosen": "a", "rejected": "b"}\n')
    assert next(read_records(str(jsonl))).fields["prompt"] == "hi"


@pytest.mark.parametrize("name, content, where, words", [
    ("latin1.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', "latin1.jsonl, line 2", "not UTF-8"),
    ("deep.jsonl", b"[" * 100_000 + b"]" * 100_000 + b"\n", "deep.jsonl, line 1", "nested too deeply"),
    ("wide.csv", b"prompt,chosen,rejected\na,b,c\na,b,c,d,e\n", "wide.csv, line 3", "2 more fields"),
    ("latin1.json", b'[{"prompt": "ok"},\n{"prompt": "caf\xe9"}]', "latin1.json, line 2", "not UTF-8"),
], ids=["encoding", "nesting", "csv-fields", "json-encoding"])
def test_unreadable_rows_are_located_errors(tmp_path, name, content, where, words):
    from prefalign.data.errors import DataError
    from prefalign.data.readers import read_records

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        list(read_records(str(path)))
    assert str(err.value).startswith(f"{path.parent}/{where}") and words in str(err.value)


def test_a_csv_cell_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    from prefalign.data.readers import read_records

    path = tmp_path / "long.csv"
    path.write_text("prompt,chosen,rejected\nhi," + "x" * 200_000 + ",bad\n")
    assert len(next(read_records(str(path))).fields["chosen"]) == 200_000


def test_errors_count_lines_from_one_as_editors_do(tmp_path):
    from prefalign.config import DataConfig
    from prefalign.data.errors import DataError
    from prefalign.data.loading import load_examples

    path = tmp_path / "gaps.jsonl"
    path.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n\n{"prompt": "a", "chosen": "b"}\n')
    with pytest.raises(DataError, match=r"gaps.jsonl, line 3, field 'rejected'"):
        load_examples(str(path), DataConfig(train=str(path)))


# -- configs: the key named, and TRL's names answered ------------------------------------------------------

@pytest.mark.parametrize("override, words", [
    ("trainer.learning_rate=1e-5", "here it is trainer.lr"),
    ("trainer.per_device_train_batch_size=4", "here it is trainer.batch_size"),
    ("trainer.num_train_epochs=2", "here it is trainer.epochs"),
    ("trainer.gradient_accumulation_steps=2", "here it is trainer.grad_accum"),
    ("trainer.adam_betas=[1.5, 0.9]", "trainer.adam_betas.0"),
    ("trainer.adam_eps=0", "trainer.adam_eps"),
    ("loss=[]", "loss"),
])
def test_config_errors_name_the_key_and_answer_trl_names(override, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_config(None, [override])


def test_a_missing_model_folder_is_said_to_be_missing(tmp_path, pairs_file):
    from prefalign.config import ModelConfig
    from prefalign.models.loading import load_causal_lm

    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_causal_lm(ModelConfig(name_or_path=str(tmp_path / "not-there")))
    result = CliRunner().invoke(app, ["train", f"model.name_or_path={tmp_path / 'not-there'}",
                                      f"data.train={pairs_file}", f"trainer.output_dir={tmp_path / 'r'}"])
    assert result.exit_code == 2 and "no such folder" in result.output and "Repo id" not in result.output


def test_the_loss_list_shows_required_parameters_and_keeps_brackets():
    result = CliRunner().invoke(app, ["losses"])
    assert result.exit_code == 0
    assert "PydanticUnd" not in result.output  # rich may cut the word short in a narrow table
    assert "s(b [f'(u_w)" in result.output  # f-DPO's formula; rich used to read "[f'(u_w) ...]" as markup


def test_resume_accepts_config_keys_added_since_the_run_was_made(tmp_path):
    import json

    from prefalign.training.run_folder import IDENTITY_FILE, RunFolderError, check_resume

    (tmp_path / IDENTITY_FILE).write_text(json.dumps({"identity": {"trainer.lr": 0.001}}))
    check_resume(tmp_path, {"trainer.lr": 0.001, "model.disable_dropout": True})  # a key newer than the run
    with pytest.raises(RunFolderError, match="trainer.lr: 0.001 -> 0.01"):
        check_resume(tmp_path, {"trainer.lr": 0.01})
