"""What a practitioner meets on day one: the run's first line (threads, load, a warning on a busy machine),
plain log lines in non-terminal output, checkpoints by default, what --resume changed, defaults that never
write into the package or the repo, --version."""

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.training.machine import MachineLoad, use_threads
from tests.conftest import assert_report

runner = CliRunner()


def test_a_busy_machine_is_named_with_a_thread_count_that_fits():
    idle = MachineLoad(threads=2, processes=1, cores=2, load=0.1)
    assert not idle.oversubscribed and idle.warning() is None
    busy = MachineLoad(threads=2, processes=1, cores=2, load=2.0)  # two other busy processes on two cores
    assert busy.oversubscribed
    assert "load 2.0 on 2 cores" in busy.warning() and "engine.threads=1" in busy.warning()
    many = MachineLoad(threads=4, processes=2, cores=16, load=3.0)
    assert not many.oversubscribed
    assert "engine.threads=6" in MachineLoad(threads=16, processes=2, cores=16, load=3.0).warning()


def test_engine_threads_sets_torchs_thread_count():
    before = torch.get_num_threads()
    try:
        assert use_threads(1).threads == 1 == torch.get_num_threads()
        assert use_threads(None).threads == 1  # None keeps what is set (OMP_NUM_THREADS or torch's choice)
    finally:
        torch.set_num_threads(before)


def test_a_run_in_a_log_file_prints_plain_lines_checkpoints_and_resumes_saying_what_changed(
        tiny_model_dir, pairs_file, tmp_path):
    out = tmp_path / "a-run-folder-with-a-long-name-so-that-its-path-is-well-over-eighty-columns-wide"
    args = ["train", f"model.name_or_path={tiny_model_dir}", f"data.train={pairs_file}", "data.eval_fraction=0",
            f"trainer.output_dir={out}", "trainer.batch_size=2", "trainer.log_every=2", "engine.threads=1"]
    before = torch.get_num_threads()
    try:
        result = runner.invoke(app, [*args, "trainer.max_steps=4"])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].startswith("processes: 1 (single) on cpu; threads: 1 per process x 1 on ")
        steps = [x for x in lines if x.startswith("step ")]
        assert [x.split()[1] for x in steps] == ["2/4", "4/4"]
        assert re.fullmatch(r"step 2/4 loss \d\.\d{4} rewards/accuracies \d\.\d{3} grad_norm \S+ lr \S+ "
                            r"tokens_per_s \d+", steps[0]), steps[0]
        assert any(x.startswith("done:") and str(out / "model") in x for x in lines)  # one line, never wrapped
        assert (out / "checkpoints" / "step-00000004" / "state.json").is_file()  # by default, at the last step
        page = (out / "report.html").read_text()  # train writes a report, `prefalign report` rebuilds it
        assert_report(page, 7, ["Summary", "Training curves"])  # loss ... gradient norm and lr, throughput
        assert "reward accuracy" in page
        result = runner.invoke(app, [*args, "trainer.max_steps=6", "--resume"])
        assert result.exit_code == 0, result.output
        assert "resume: settings changed since the run started: trainer.max_steps: 4 -> 6" in result.output
    finally:
        torch.set_num_threads(before)


def test_report_builds_a_page_for_any_run_folder(tiny_model_dir, pairs_file, tmp_path):
    out = tmp_path / "rm"
    result = runner.invoke(app, ["rm", "train", f"model.name_or_path={tiny_model_dir}", f"data.train={pairs_file}",
                                 "data.eval_fraction=0.25", f"trainer.output_dir={out}", "trainer.max_steps=3",
                                 "trainer.batch_size=2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0 and str(out / "report.html") in result.output
    page = (out / "report.html").read_text()
    assert "Preference accuracy" not in page  # titles are drawn into the images, not the page
    assert_report(page, 4, ["Summary", "Training curves"])  # loss, accuracy, gradient norm and lr, throughput
    assert "held out accuracy" in page and "pairs train" in page
    missing = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no metrics.jsonl" in missing.output


def test_defaults_write_into_the_run_folder_never_into_the_package_or_docs(monkeypatch, tmp_path):
    import prefalign.evaluation.zoo as zoo
    import prefalign.toy.base as base

    seen = {}
    monkeypatch.setattr(base, "build_base", lambda out: seen.setdefault("base", out))
    monkeypatch.setattr(zoo, "run_zoo", lambda out, doc, **kw: seen.setdefault("zoo", doc) and [])
    assert runner.invoke(app, ["toy", "build-base"]).exit_code == 0
    assert runner.invoke(app, ["zoo", "--out", str(tmp_path / "z")]).exit_code == 0
    assert str(seen["base"]) == "runs/toy-base"
    assert seen["zoo"] == tmp_path / "z" / "losses.md"


def test_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"prefalign {version('prefalign')}"


@pytest.mark.parametrize("args", [["rm", "eval", "--help"], ["losses"]])
def test_bracketed_help_and_formulas_are_shown_as_written(args):
    result = runner.invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0
    expected = "{section: [subsets]}" if args[0] == "rm" else "s(b [f'(u_w)"
    assert expected in result.output


def test_toy_pairs_are_sampled_once_then_read_from_the_cache(tmp_path):
    from prefalign.toy.preference_data import cached_toy_pairs

    said = []
    first = cached_toy_pairs(tmp_path / "run1" / "data", seed=0, n_prompts=6, n_samples=2, say=said.append)
    assert len(said) == 2 and said[0].startswith("data: sampling the toy base for toy pairs: 6 prompts x 2")
    second = cached_toy_pairs(tmp_path / "run2" / "data", seed=0, n_prompts=6, n_samples=2, say=said.append)
    assert len(said) == 2 and second.read_text() == first.read_text() != ""
    other = cached_toy_pairs(tmp_path / "run3" / "data", seed=1, n_prompts=6, n_samples=2, say=said.append)
    assert len(said) == 4 and other.read_text() != first.read_text()  # other settings, another entry
    first.write_text(first.read_text().splitlines()[0] + "\n")  # a resumed run keeps its own file
    assert cached_toy_pairs(tmp_path / "run1" / "data", seed=0, n_prompts=6, n_samples=2).read_text().count("\n") == 1


def test_data_inspect_previews_counts_and_warns_about_unknown_tokens(tiny_model_dir, tmp_path):
    from tests.conftest import write_jsonl

    rows = [{"prompt": "review the red lamp .", "chosen": " the lamp is great .", "rejected": " the lamp is awful ."},
            {"prompt": "Bonjour, comment ça va ?", "chosen": " Très bien, merci.", "rejected": " Mal."},
            {"prompt": "review the red lamp . " * 6, "chosen": " the lamp is great .", "rejected": " it is awful ."}]
    data = write_jsonl(tmp_path / "mixed.jsonl", rows)
    result = runner.invoke(app, ["data", "inspect", str(data), "--tokenizer", str(tiny_model_dir), "--max-length", "16"])
    assert result.exit_code == 0, result.output
    assert "review the red lamp .|the lamp is great ." in result.output  # the boundary, after the template
    assert "3 pairs" in result.output and "prompt: min 6, median 6" in result.output
    assert "1 of 3 pairs exceed max_length=16" in result.output
    assert "1 of 3 pairs hold the tokenizer's unknown token" in result.output and "mixed.jsonl, line 2" in result.output


def test_config_show_prints_any_commands_schema():
    result = runner.invoke(app, ["config", "show", "--command", "rm"])
    assert result.exit_code == 0 and "segment_ids: true" in result.output and "head: scalar" in result.output
    assert "group_size" in runner.invoke(app, ["config", "show", "--command", "rl"]).output
    assert runner.invoke(app, ["config", "show", "--command", "nope"]).exit_code == 2


def test_generate_samples_from_a_model_a_run_and_a_checkpoint(tiny_model_dir, pairs_file, tmp_path):
    import json

    run = tmp_path / "run"
    assert runner.invoke(app, ["train", f"model.name_or_path={tiny_model_dir}", f"data.train={pairs_file}",
                               "data.eval_fraction=0", f"trainer.output_dir={run}", "trainer.max_steps=2",
                               "trainer.batch_size=2", "trainer.save_every=1", "trainer.progress=false"]).exit_code == 0
    common = ["--prompt", "review the red lamp .", "--prompt", "list 2 fruits .", "-n", "2", "--max-new-tokens", "6"]
    outputs = {}
    for name, source in [("model", tiny_model_dir), ("run", run), ("checkpoint", run / "checkpoints" / "step-00000002")]:
        result = runner.invoke(app, ["generate", str(source), *common, "--out", str(tmp_path / f"{name}.jsonl")])
        assert result.exit_code == 0, result.output
        outputs[name] = [json.loads(x) for x in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in outputs[name]] == ["review the red lamp ."] * 2 + ["list 2 fruits ."] * 2
    assert outputs["run"] == outputs["checkpoint"]  # the last checkpoint holds the exported model's weights
    again = runner.invoke(app, ["generate", str(run), *common, "--out", str(tmp_path / "again.jsonl")])
    assert again.exit_code == 0 and (tmp_path / "again.jsonl").read_text() == (tmp_path / "run.jsonl").read_text()
    chat = runner.invoke(app, ["generate", str(tiny_model_dir), "--prompt", "list 2 fruits .", "--chat"])
    assert chat.exit_code == 0, chat.output


def test_labels_of_close_frontier_points_are_moved_apart():
    from prefalign.evaluation.plots import label_offsets, point_label

    offsets = label_offsets([(0.0, 0.0), (1.0, 1.0), (1.01, 1.0), (1.0, 1.02), (0.5, 0.5)])
    assert offsets[0] == offsets[1] == offsets[4] == (3, 3)
    assert len({offsets[1], offsets[2], offsets[3]}) == 3  # three points in one spot: three lines
    # labels run to the right: points a fifth of the x range apart at one height still get two lines
    assert label_offsets([(0.0, 1.0), (0.2, 1.0), (1.0, 0.0)]) == [(3, 3), (3, -6), (3, 3)]
    assert [point_label(n) for n in ("dpo@step-00000006", "final", "a@best")] == ["step 6", "final", "best"]


def test_push_writes_a_model_card_and_uploads_the_folder_up_to_the_network(tiny_model_dir, pairs_file, tmp_path,
                                                                          monkeypatch):
    import huggingface_hub

    run = tmp_path / "run"
    assert runner.invoke(app, ["train", f"model.name_or_path={tiny_model_dir}", f"data.train={pairs_file}",
                               "data.eval_fraction=0.25", f"trainer.output_dir={run}", "trainer.max_steps=2",
                               "trainer.batch_size=2", "trainer.progress=false"]).exit_code == 0
    dry = runner.invoke(app, ["push", str(run), "me/tiny-dpo", "--dry-run"])
    assert dry.exit_code == 0 and "model.safetensors" in dry.output and "README.md" in dry.output
    card = (run / "model" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and "- dpo" in card
    assert "AutoModelForCausalLM.from_pretrained('me/tiny-dpo')" in card and "| eval/loss |" in card

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create", repo_id, private, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return "https://huggingface.co/me/tiny-dpo/commit/abc"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    result = runner.invoke(app, ["push", str(run), "me/tiny-dpo", "--private"])
    assert result.exit_code == 0, result.output
    assert calls[1] == ("create", "me/tiny-dpo", True, True)
    assert calls[2][0] == "upload" and {"README.md", "model.safetensors", "config.json"} <= set(calls[2][2])
    assert runner.invoke(app, ["push", str(run), "me/x", "--what", "adapter", "--dry-run"]).exit_code == 2


def test_chat_answers_each_line_through_the_chat_template(tiny_model_dir):
    first = runner.invoke(app, ["chat", str(tiny_model_dir), "--max-new-tokens", "5"], input="review the red lamp .\n"
                                                                                            "list 2 fruits .\n\n")
    assert first.exit_code == 0, first.output
    assert first.output.count("assistant:") == 2
    again = runner.invoke(app, ["chat", str(tiny_model_dir), "--max-new-tokens", "5"], input="review the red lamp .\n"
                                                                                            "list 2 fruits .\n\n")
    assert again.output == first.output  # seeded
