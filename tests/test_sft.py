"""`prefalign sft`: the SFT formats, demonstrations from preference data, conditional training's control
tokens and threshold by hand, and runs of the command (plain and conditional) that learn."""

import json

import pytest
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.config.schema import ConditionConfig, DataConfig
from prefalign.data.errors import DataError, RowRef
from prefalign.data.examples import Demonstration
from prefalign.data.formats import detect_format, parse_messages
from prefalign.data.loading import load_examples, to_demonstrations, to_pairs
from prefalign.training.metrics import read_metrics
from prefalign.training.sft_recipe import condition_threshold, tag, with_control_token
from tests.conftest import write_jsonl

REF = RowRef("d.jsonl", 0, 1)


def test_sft_formats_are_detected_and_checked():
    assert detect_format({"prompt": "p", "completion": " c"}, REF) == "completion"
    assert detect_format({"prompt": "p", "completion": " c", "label": True}, REF) == "unpaired"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert detect_format({"messages": chat}, REF) == "messages"
    demo = parse_messages({"messages": chat, "score": 0.5}, REF)
    assert demo.prompt == chat[:1] and demo.completion == chat[1:] and demo.score == 0.5
    with pytest.raises(DataError, match=r"messages\[1\].role.*assistant"):
        parse_messages({"messages": chat[::-1]}, REF)


def test_demonstrations_from_preference_data(tmp_path):
    rows = [{"prompt": "a", "chosen": " good", "rejected": " bad"},
            {"prompt": "b", "completions": [{"response": " ok", "score": 1.0}, {"response": " best", "score": 3.0}]},
            {"prompt": "c", "completion": " fine", "label": False}]
    cfg = DataConfig(train=str(write_jsonl(tmp_path / "mixed.jsonl", rows[:1])))
    assert [(d.prompt, d.completion) for d in to_demonstrations(load_examples(cfg.train, cfg))] == [("a", " good")]
    for i, expected in ((1, [("b", " best", None)]), (2, [])):
        cfg = DataConfig(train=str(write_jsonl(tmp_path / f"r{i}.jsonl", rows[i:i + 1])))
        assert [(d.prompt, d.completion, d.score) for d in to_demonstrations(load_examples(cfg.train, cfg))] == expected
    cfg = DataConfig(train=str(write_jsonl(tmp_path / "rated.jsonl", rows[1:2])))
    every = to_demonstrations(load_examples(cfg.train, cfg), every=True)
    assert [(d.completion, d.score) for d in every] == [(" ok", 1.0), (" best", 3.0)]
    cfg = DataConfig(train=str(write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "a", "completion": " c"}])))
    with pytest.raises(DataError, match="prefalign sft"):
        to_pairs(load_examples(cfg.train, cfg), cfg)


def test_control_tokens_and_the_median_threshold_by_hand():
    demos = [Demonstration("p", " x", REF, s) for s in (0.0, 1.0, 2.0, 5.0)]
    cfg = ConditionConfig()
    assert condition_threshold(demos, cfg) == 1.5  # the median of 0, 1, 2, 5
    assert [d.prompt for d in tag(demos, cfg, 1.5)] == ["p<|bad|>", "p<|bad|>", "p<|good|>", "p<|good|>"]
    assert condition_threshold(demos, ConditionConfig(threshold=0.5)) == 0.5
    chat = [{"role": "user", "content": "hi"}]
    assert with_control_token(chat, "<|good|>") == [{"role": "user", "content": "hi<|good|>"}]
    with pytest.raises(DataError, match="score"):
        condition_threshold([Demonstration("p", " x", REF)], cfg)


def test_sft_command_lowers_the_nll_and_conditional_training_adds_its_tokens(tmp_path):
    from transformers import AutoTokenizer

    rows = [{"prompt": f"what is {a} plus {b} ?", "completion": f" the answer is {a + b} .", "score": float(a % 2 == 0)}
            for a in range(8) for b in range(8)]
    data = write_jsonl(tmp_path / "demos.jsonl", rows)
    common = ["model.name_or_path=toy", f"data.train={data}", "trainer.max_steps=12", "trainer.batch_size=8",
              "trainer.lr=1e-3", "trainer.log_every=1", "trainer.progress=false"]
    runner = CliRunner()
    plain = runner.invoke(app, ["sft", *common, f"trainer.output_dir={tmp_path / 'plain'}"])
    assert plain.exit_code == 0, plain.output
    losses = [m["loss"] for m in read_metrics(tmp_path / "plain") if "loss" in m]
    assert sum(losses[-3:]) < sum(losses[:3])
    conditional = runner.invoke(app, ["sft", *common, f"trainer.output_dir={tmp_path / 'cond'}", "condition={}"])
    assert conditional.exit_code == 0, conditional.output
    assert "control tokens by score >= 0.5" in conditional.output  # the median of 32 ones and 32 zeros
    tok = AutoTokenizer.from_pretrained(tmp_path / "cond" / "model")
    assert len(tok("<|good|>", add_special_tokens=False)["input_ids"]) == 1
    saved = json.loads((tmp_path / "cond" / "model" / "config.json").read_text())
    assert saved["vocab_size"] == len(tok)
    refused = runner.invoke(app, ["sft", *common, f"trainer.output_dir={tmp_path / 'lora'}", "condition={}",
                                  "model.lora={r: 4}"])
    assert refused.exit_code != 0 and "adapter leaves frozen" in refused.output
