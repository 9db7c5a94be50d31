"""One test per kind of bad input: a located error (file, row, field), or a counted skip under `skip`."""

import math

import pytest

from prefalign.config import DataConfig
from prefalign.data.errors import DataError
from prefalign.data.loading import load_examples, to_pairs
from prefalign.data.tokenize import CompletionTokenizer
from prefalign.training.preference import prepare_data

from .conftest import write_jsonl

GOOD = {"prompt": "review the red lamp .", "chosen": " the lamp is great .", "rejected": " the lamp is awful ."}

BAD_ROWS = [
    ("missing_field", {"prompt": "p", "chosen": " a"}, "rejected", "missing"),
    ("mistyped_field", {"prompt": "p", "chosen": 3, "rejected": " b"}, "chosen", "expected a string"),
    ("empty_response", {"prompt": "p", "chosen": "   ", "rejected": " b"}, "chosen", "is empty"),
    ("identical_pair", {"prompt": "p", "chosen": " same", "rejected": " same"}, "rejected", "identical to chosen"),
]


@pytest.mark.parametrize("kind, row, field, words", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_bad_pair_row_names_file_row_field(tmp_path, kind, row, field, words):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, row])
    with pytest.raises(DataError) as err:
        load_examples(str(path), DataConfig(format="standard"))
    assert str(err.value).startswith(f"{path}, line 3, field '{field}'")
    assert words in str(err.value) and err.value.kind == kind


@pytest.mark.parametrize("kind, row, field, words", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_bad_pair_row_skipped_and_counted(tmp_path, kind, row, field, words):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, row, GOOD])
    loaded = load_examples(str(path), DataConfig(format="standard", on_bad_row="skip"))
    assert len(loaded.examples) == 2 and loaded.tally.counts == {kind: 1}
    summary = "\n".join(loaded.tally.summary_lines())
    assert "3 rows read, 1 skipped" in summary and kind in summary and "line 2" in summary


def test_non_finite_score(tmp_path):
    row = {"prompt": "p", "completions": [{"response": "a", "score": math.nan}, {"response": "b", "score": 1}]}
    path = write_jsonl(tmp_path / "rated.jsonl", [row])
    with pytest.raises(DataError, match=r"rated.jsonl, line 1, field 'completions\[0\].score': score is not finite"):
        load_examples(str(path), DataConfig())
    ranked = {"prompt": "p", "responses": ["a", "b"], "scores": [1.0, "inf"]}
    path = write_jsonl(tmp_path / "ranked.jsonl", [ranked])
    with pytest.raises(DataError, match=r"field 'scores\[1\]': score is not finite"):
        load_examples(str(path), DataConfig())


def test_prompt_not_a_prefix_in_implicit_format(tmp_path):
    row = {"prompt": "Q: hello A:", "chosen": "Q: hi A: yes", "rejected": "Q: hi A: no"}
    path = write_jsonl(tmp_path / "hh.jsonl", [row])
    with pytest.raises(DataError, match=r"hh.jsonl, line 1, field 'prompt': is not a prefix of chosen"):
        load_examples(str(path), DataConfig(format="implicit"))
    path = write_jsonl(tmp_path / "hh2.jsonl", [{"chosen": "yes", "rejected": "no"}])
    with pytest.raises(DataError, match="share no prompt"):
        load_examples(str(path), DataConfig())


def test_sequence_over_max_length(tmp_path, tiny_model_dir):
    long = {"prompt": "review the red lamp .", "chosen": " the lamp is great ." * 10, "rejected": " the lamp is awful ."}
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, long, GOOD])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = DataConfig(train=str(path), max_length=20, too_long="reject", eval_fraction=0)
    with pytest.raises(DataError, match=r"train.jsonl, line 2: \d+ tokens exceed max_length=20"):
        prepare_data(cfg, tok, 0)
    data = prepare_data(cfg.model_copy(update={"on_bad_row": "skip"}), tok, 0)
    assert len(data.train) == 2 and data.tally.counts == {"too_long": 1}


def test_mistyped_messages(tmp_path):
    row = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant"}],
           "rejected": [{"role": "assistant", "content": "no"}]}
    path = write_jsonl(tmp_path / "c.jsonl", [row])
    with pytest.raises(DataError, match=r"field 'chosen\[0\]': expected a message"):
        load_examples(str(path), DataConfig())


def test_rated_ties_make_no_pair(tmp_path):
    row = {"prompt": "p", "completions": [{"response": "a", "score": 1}, {"response": "b", "score": 1}]}
    path = write_jsonl(tmp_path / "r.jsonl", [row, row])
    cfg = DataConfig(on_bad_row="skip")
    loaded = load_examples(str(path), cfg)
    assert to_pairs(loaded, cfg) == [] and loaded.tally.counts == {"no_pair": 2}


def test_unknown_format_is_explained(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match="cannot tell the data format"):
        load_examples(str(path), DataConfig(on_bad_row="skip"))


def test_everything_skipped_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "p", "chosen": "", "rejected": "b"}])
    with pytest.raises(DataError, match="no usable rows"):
        load_examples(str(path), DataConfig(on_bad_row="skip"))


def test_messages_need_a_chat_template():
    from prefalign.toy.tokenizer import build_toy_tokenizer

    plain = build_toy_tokenizer()
    plain.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        CompletionTokenizer(plain, 64).encode([{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "a"}])
