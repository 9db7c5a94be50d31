"""`prefalign eval policies`: pairwise judges (reward and LM asked in both orders), checkpoints as policies,
the frontier report."""

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.evaluation.pairwise_judges import LMJudge, RewardJudge
from prefalign.training.preference import train_preference
from tests.conftest import assert_report
from tests.test_training import make_config

runner = CliRunner()


class PositionBiasedLM(torch.nn.Module):
    """Answers '1' with logit `bias` more than '2', plus a content term: + quality of response 1's text."""

    def __init__(self, tokenizer, bias: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.one, self.two = tokenizer.convert_tokens_to_ids(["1", "2"])
        self.great = tokenizer.convert_tokens_to_ids("great")
        self.bias, self.vocab = bias, len(tokenizer)

    def forward(self, input_ids, attention_mask, position_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        # "great" anywhere before the word "2" of "response 2 :" counts for response 1 (crude, but fixed)
        ids = input_ids.tolist()
        for r, row in enumerate(ids):
            cut = row.index(self.two) if self.two in row else len(row)
            first_great = row[:cut].count(self.great)
            second_great = row[cut:].count(self.great)
            logits[r, -1, self.one] = self.bias + first_great - second_great
        return SimpleNamespace(logits=logits)


def test_lm_judge_asked_in_both_orders_cancels_position_bias(toy_tokenizer):
    prompts = ["review the red lamp ."] * 3
    a = ["the lamp is great .", "the lamp is great .", "the lamp is ok ."]
    b = ["the lamp is ok .", "the lamp is great .", "the lamp is great ."]
    judge = LMJudge(PositionBiasedLM(toy_tokenizer, bias=3.0), toy_tokenizer)
    one_order = judge.first_wins(prompts, a, b)
    assert one_order[1] > 0.9  # identical responses: the first position wins on its own
    p_ab, p_ba = judge.prefer(prompts, a, b), judge.prefer(prompts, b, a)
    torch.testing.assert_close(torch.tensor(p_ab) + torch.tensor(p_ba), torch.ones(3))
    assert p_ab[1] == pytest.approx(0.5) and p_ab[0] > 0.5 > p_ab[2]
    # by hand: P(a|a first) = s(3 + 1), P(b|b first) = s(3 - 1); P = (s(4) + 1 - s(2)) / 2
    s = torch.sigmoid
    assert p_ab[0] == pytest.approx(((s(torch.tensor(4.0)) + 1 - s(torch.tensor(2.0))) / 2).item(), abs=1e-6)


def test_lm_judge_refuses_bad_templates_and_unknown_answers(toy_tokenizer):
    model = PositionBiasedLM(toy_tokenizer, 0.0)
    with pytest.raises(ValueError, match="output_2"):
        LMJudge(model, toy_tokenizer, template="{instruction} {output_1}")
    with pytest.raises(ValueError, match="one known token"):
        LMJudge(model, toy_tokenizer, choices=("A", "B"))


def test_reward_judge_counts_ties_half():
    judge = RewardJudge(lambda prompts, responses: [len(r) for r in responses], "length")
    assert judge.prefer(["x"] * 3, ["aa", "a", "a"], ["a", "aa", "b"]) == [1.0, 0.0, 0.5]


@pytest.mark.parametrize("lora", [False, True])
def test_checkpoints_are_policies_and_the_last_equals_the_final_model(tiny_model_dir, pairs_file, tmp_path, lora):
    cfg = make_config(tiny_model_dir, pairs_file, tmp_path / "run", max_steps=6, save_every=3, keep_last=2, lr=1e-2)
    if lora:
        cfg.model.lora = {"r": 4, "alpha": 8}
    train_preference(cfg)
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", "policies", "--policy", f"dpo={tmp_path / 'run' / 'checkpoints'}",
                                 "--policy", f"final={tmp_path / 'run'}", "--baseline", str(tiny_model_dir),
                                 "--prompts", str(pairs_file), "--n-prompts", "8", "--max-new-tokens", "8",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    figures = {p["name"]: p for p in json.loads((out / "eval.json").read_text())["policies"]}
    assert set(figures) == {"dpo@step-00000003", "dpo@step-00000006", "final"}
    last, final = figures["dpo@step-00000006"], figures["final"]
    assert (last["mean_reward"], last["win_rate"]) == (final["mean_reward"], final["win_rate"])
    assert last["kl"] == pytest.approx(final["kl"], abs=1e-4) and final["kl"] > 0
    assert figures["dpo@step-00000003"]["kl"] != pytest.approx(final["kl"])
    html = (out / "report.html").read_text()
    assert_report(html, 3, ["Reward distributions", "Length vs reward", "Reward/KL frontier", "Example completions"])
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 * 8 and all("reward" in s for s in samples)


def test_eval_policies_reports_located_errors(tiny_model_dir, tmp_path):
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3}\n')
    result = runner.invoke(app, ["eval", "policies", "--policy", str(tiny_model_dir), "--baseline", str(tiny_model_dir),
                                 "--prompts", str(bad)])
    assert result.exit_code == 2 and "line 2" in result.output and "prompt" in result.output
    result = runner.invoke(app, ["eval", "policies", "--policy", str(tiny_model_dir), "--judge", "oracle"])
    assert result.exit_code == 2 and "oracle" in result.output
