"""Rewards-in-Context: the preference-to-level mapping and the levels against hand-computed values, the
conditioned prompt as the toy tokenizer reads it, and a short toy run end to end."""

import pytest

from prefalign.pluralistic.rewards_in_context import (
    RewardLevels,
    condition,
    conditioned_examples,
    preference_levels,
)


def test_preference_levels_follow_rics_mapping():
    # K = 2, L = 10: a weight >= 1/2 asks for the top level 9, a smaller one for round(2 w 9)
    assert preference_levels([1.0, 0.0]) == [9, 0]
    assert preference_levels([0.8, 0.2]) == [9, 4]  # 2 * 0.2 * 9 = 3.6
    assert preference_levels([0.5, 0.5]) == [9, 9]
    assert preference_levels([0.3, 0.7]) == [5, 9]  # 5.4
    assert preference_levels([0.2, 0.3, 0.5], n=5) == [2, 4, 4]  # K = 3: 3 * 0.2 * 4 = 2.4; 0.3 < 1/3 -> 3.6
    with pytest.raises(ValueError, match="sum to 1"):
        preference_levels([0.5, 0.6])


def test_levels_quantise_between_the_5th_and_95th_percentiles():
    scale = RewardLevels.fit([[float(i), -float(i)] for i in range(101)])  # 0..100 and its negative
    assert scale.low == pytest.approx((5.0, -95.0)) and scale.high == pytest.approx((95.0, -5.0))
    assert scale.levels([5.0, -5.0]) == [0, 9]
    assert scale.levels([50.0, -50.0]) == [5, 5]  # (45 / 90) * 9 = 4.5, halves round up
    assert scale.levels([1000.0, 1000.0]) == [9, 9]  # clipped
    assert conditioned_examples([("p", " y", [95.0, -95.0])], scale) == [("<|system|> 9 0 p", " y")]
    with pytest.raises(ValueError, match="at least two"):
        RewardLevels.fit([[1.0]])


def test_the_conditioned_prompt_is_the_levels_then_the_prompt_for_the_toy_tokenizer():
    from prefalign.toy.tokenizer import build_toy_tokenizer

    tok = build_toy_tokenizer()
    ids = tok(condition("what is 7 plus 5 ?", [9, 0]))["input_ids"]
    assert tok.convert_ids_to_tokens(ids[:4]) == ["<bos>", "<|system|>", "9", "0"]
    assert ids[4:] == tok("what is 7 plus 5 ?")["input_ids"][1:]


def test_ric_front_runs_on_the_toy_task(tmp_path):
    from prefalign.evaluation.ric_front import render, run_ric_front

    result = run_ric_front(tmp_path, [1.0, 0.0], steps=3, n_prompts=12, n_eval_prompts=6)
    assert [p["levels"] for p in result["points"]] == [[9, 0], [0, 9]]
    assert any(p["on_front"] for p in result["points"])
    assert "| gold 1.00, brevity 0.00 | 9 0 |" in render(result)
