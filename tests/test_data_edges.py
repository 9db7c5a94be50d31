"""Data edge cases from the hardening issue: pairs identical once tokenized, the format decided by more
than the first row, message roles, chat templates that reject a conversation, and huge rows cut by
characters before tokenizing. Each gives a located row error that `on_bad_row: skip` skips."""

import pytest

from prefalign.config.schema import DataConfig
from prefalign.data.errors import DataError, RowRef
from prefalign.data.examples import PreferencePair
from prefalign.data.loading import load_examples, to_pairs
from prefalign.data.tokenize import CHARS_PER_TOKEN, CompletionTokenizer
from prefalign.training.preference import prepare_data
from tests.conftest import PAIRS, write_jsonl


def test_a_pair_that_differs_only_in_whitespace_is_an_identical_pair(toy_tokenizer, tmp_path):
    tok = CompletionTokenizer(toy_tokenizer, 64)
    assert toy_tokenizer(" the lamp is great .")["input_ids"] == toy_tokenizer(" the lamp  is great . ")["input_ids"]
    pair = PreferencePair("review the red lamp .", " the lamp is great .", " the lamp  is great . ",
                          RowRef("d.jsonl", 3, 4))
    with pytest.raises(DataError, match="line 4, field 'rejected': tokenizes to the same ids"):
        tok.pair(pair)
    rows = [dict(r) for r in PAIRS]
    rows[0]["rejected"] = rows[0]["chosen"] + "  "
    cfg = DataConfig(train=str(write_jsonl(tmp_path / "d.jsonl", rows)), eval_fraction=0.0, on_bad_row="skip")
    data = prepare_data(cfg, toy_tokenizer, 0)
    assert len(data.train) == 7 and data.tally.counts["identical_pair"] == 1


def test_a_pair_that_is_the_same_once_truncated_is_an_identical_pair(toy_tokenizer):
    tok = CompletionTokenizer(toy_tokenizer, 12, max_prompt_length=4)
    shared = " the lamp is great and the lamp is great and the lamp is great"
    pair = PreferencePair("review the red lamp .", shared + " .", shared + " and sturdy .", RowRef("d.jsonl", 0, 1))
    with pytest.raises(DataError, match="line 1, field 'rejected': is the same as chosen once truncated to max_length=12"):
        tok.pair(pair)


def test_the_format_is_decided_by_most_of_the_first_rows(tmp_path):
    rows = [{"chosen": "hi there", "rejected": "bye"}] + [dict(r) for r in PAIRS]  # the odd row comes first
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    loaded = load_examples(str(path), DataConfig(train=str(path), on_bad_row="skip"))
    assert loaded.format == "standard" and len(loaded.examples) == 8
    assert "8 of the first 9 rows" in loaded.format_note and "implicit at" in loaded.format_note
    assert loaded.tally.counts["missing_field"] == 1
    with pytest.raises(DataError, match="line 1, field 'prompt': missing"):
        load_examples(str(path), DataConfig(train=str(path)))


def test_unknown_message_roles_are_row_errors(tmp_path):
    rows = [{"prompt": [{"role": "hacker", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}]}]
    path = write_jsonl(tmp_path / "roles.jsonl", rows)
    with pytest.raises(DataError, match="line 1, field 'prompt\\[0\\].role': unknown role 'hacker'"):
        load_examples(str(path), DataConfig(train=str(path)))


def test_a_chat_template_that_rejects_a_conversation_is_a_skippable_row_error(toy_tokenizer, tmp_path):
    import copy

    tokenizer = copy.deepcopy(toy_tokenizer)
    tokenizer.chat_template = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('the first turn must be the "
                               "user') }}{% endif %}{% for m in messages %}{{ m['content'] }} {% endfor %}")
    good = {"prompt": [{"role": "user", "content": "review the red lamp ."}],
            "chosen": [{"role": "assistant", "content": "the lamp is great ."}],
            "rejected": [{"role": "assistant", "content": "the lamp is awful ."}]}
    bad = dict(good, prompt=[{"role": "assistant", "content": "the lamp ."}, {"role": "user", "content": "review it ."}])
    path = write_jsonl(tmp_path / "chat.jsonl", [good, bad, good])
    with pytest.raises(DataError, match="line 2, field 'prompt': the chat template rejects this conversation: the "
                                        "first turn must be the user"):
        prepare_data(DataConfig(train=str(path), eval_fraction=0.0), tokenizer, 0)
    data = prepare_data(DataConfig(train=str(path), eval_fraction=0.0, on_bad_row="skip"), tokenizer, 0)
    assert len(data.train) == 2 and data.tally.counts["chat_template"] == 1


def test_huge_rows_are_cut_by_characters_before_tokenizing(toy_tokenizer):
    seen = []

    class Spy:
        def __call__(self, text, **kwargs):
            seen.append(len(text))
            return toy_tokenizer(text, **kwargs)

        def __getattr__(self, name):
            return getattr(toy_tokenizer, name)

    prompt = "review the red lamp . " * 20_000  # 440,000 characters
    pair = PreferencePair(prompt, " the lamp is great ." * 5000, " it is awful .", RowRef("d.jsonl", 0, 1))
    fast = CompletionTokenizer(Spy(), 64).pair(pair)
    assert max(seen) <= 2 * CHARS_PER_TOKEN * 64 + 100
    whole = CompletionTokenizer(toy_tokenizer, 64)
    whole._cut_characters = lambda p, c: (p, c)  # the reference: tokenize everything, then truncate
    slow = whole.pair(pair)
    assert (fast.prompt_ids, fast.chosen_ids, fast.rejected_ids) == (slow.prompt_ids, slow.chosen_ids, slow.rejected_ids)
    assert fast.truncated


def test_to_pairs_keeps_working_on_detected_formats(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    cfg = DataConfig(train=str(path))
    assert len(to_pairs(load_examples(str(path), cfg), cfg)) == 8


@pytest.mark.parametrize("fmt, row", [
    ("joint", {"chosen_prompt": "p one .", "chosen": " a .", "rejected_prompt": "p two .", "rejected": " b ."}),
    ("triple", {"prompt": "p .", "gold": " g .", "chosen": " a .", "rejected": " b ."})])
def test_joint_and_triple_can_be_declared(tmp_path, fmt, row):
    path = write_jsonl(tmp_path / f"{fmt}.jsonl", [row])
    loaded = load_examples(str(path), DataConfig(train=str(path), format=fmt))
    assert loaded.format == fmt and len(loaded.examples) == 1
