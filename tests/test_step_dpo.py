"""Step-DPO: the step format (accepted steps join the prompt, no EOS after a step), the toy's step values by
hand, the pair builder, and `prefalign train` on step pairs."""

import json

import pytest
from transformers import AutoTokenizer

from prefalign.data.errors import DataError, RowRef
from prefalign.data.formats import detect_format, parse_step
from prefalign.data.tokenize import CompletionTokenizer
from prefalign.models.loading import TOY_BASE
from prefalign.toy.step_pairs import StepError, first_error, split_steps, step_pair, step_values

ROW = {"prompt": "what is 7 plus 5 ?", "initial_reason_steps": " the answer is 12 .",
       "chosen": " the answer is 12 .", "rejected": " the answer is 13 ."}


def test_step_rows_put_the_accepted_steps_in_the_prompt_and_end_steps_without_eos():
    ref = RowRef("steps.jsonl", 1)
    assert detect_format(ROW, ref) == "step"
    pair = parse_step(ROW, ref)
    assert pair.prompt == "what is 7 plus 5 ? the answer is 12 ." and pair.next_step
    tok = AutoTokenizer.from_pretrained(TOY_BASE)
    encoded = CompletionTokenizer(tok, max_length=64).pair(pair)
    assert encoded.prompt_ids == tok("what is 7 plus 5 ? the answer is 12 .")["input_ids"]
    assert tok.decode(encoded.chosen_ids) == "the answer is 12 ." and tok.eos_token_id not in encoded.chosen_ids
    assert tok.eos_token_id not in encoded.rejected_ids
    with pytest.raises(DataError, match="initial_reason_steps"):
        parse_step({**ROW, "initial_reason_steps": ["a list"]}, ref)


def test_step_values_and_the_first_error_by_hand():
    prompt = "what is 7 plus 5 ?"
    steps = split_steps(" the answer is 12 . the answer is 12 .")
    assert steps == [" the answer is 12 .", " the answer is 12 ."]
    # right answer in the answer frame: 1.5 + 0.2; the repeat: -0.5
    assert step_values(prompt, steps) == pytest.approx([1.7, -0.5])
    e = first_error(prompt, " the answer is 12 . the answer is 12 .")
    assert e.accepted == [" the answer is 12 ."] and e.value == pytest.approx(-0.5)
    wrong = first_error(prompt, " the answer is 14 .")
    assert wrong.accepted == [] and wrong.value == pytest.approx(-0.6 + 0.2)  # -0.3 x |14 - 12| + frame
    assert first_error(prompt, " the answer is 12 .") is None
    # review: 1.5 x (pos - neg) / (pos + neg) + 0.5 for naming the item = 2.0; a negative sentence takes the
    # sentiment term from 1.5 to 0
    review = "review the red lamp ."
    assert step_values(review, [" the lamp is great .", " the lamp is awful ."]) == pytest.approx([2.0, -1.5])


def test_step_pair_takes_the_best_replacement_above_the_rejected_step():
    e = StepError("what is 7 plus 5 ?", [], " the answer is 14 .", -0.4)
    row = step_pair(e, [" the answer is 13 .", " the answer is 12 .", "", " the answer is 14 ."])
    assert row["chosen"] == " the answer is 12 ." and row["value_chosen"] == pytest.approx(1.7)
    assert row["initial_reason_steps"] == "" and row["rejected"] == " the answer is 14 ."
    assert step_pair(e, [" the answer is 20 .", ""]) is None  # no replacement of value >= 0


def test_train_dpo_on_step_pairs_from_the_toy_builder(tmp_path):
    from typer.testing import CliRunner

    from prefalign.cli.main import app

    runner = CliRunner()
    made = runner.invoke(app, ["toy", "make-step-pairs", "--out", str(tmp_path / "steps"), "--prompts", "40"])
    assert made.exit_code == 0, made.output
    rows = [json.loads(line) for line in (tmp_path / "steps" / "step_pairs.jsonl").read_text().splitlines()]
    assert rows and all(r["value_chosen"] > r["value_rejected"] and r["value_chosen"] >= 0 for r in rows)
    for r in rows:
        error = first_error(r["prompt"], r["initial_reason_steps"] + r["rejected"])
        assert error.accepted == split_steps(r["initial_reason_steps"])  # the rejected step is the first error
    result = runner.invoke(app, ["train", "model.name_or_path=toy", f"data.train={tmp_path / 'steps' / 'step_pairs.jsonl'}",
                                 "loss=[{name: dpo, beta: 0.1}]", "trainer.max_steps=3", "trainer.batch_size=4",
                                 "trainer.progress=false", f"trainer.output_dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
