"""Directional Preference Alignment (Wang et al. 2024): directions, the projected reward R_v = v . z and the
rejection-sampling choice, against values worked by hand."""

import math

import numpy as np
import pytest

from prefalign.pluralistic import directional as dpa


def test_directions_are_unit_vectors_in_ten_degree_steps():
    assert dpa.direction(0).tolist() == pytest.approx([1.0, 0.0])
    assert dpa.direction(9).tolist() == pytest.approx([0.0, 1.0], abs=1e-12)
    assert dpa.direction(3).tolist() == pytest.approx([math.cos(math.pi / 6), 0.5])
    with pytest.raises(ValueError, match="0..9"):
        dpa.direction(10)
    # weights (w, 1 - w) map to the nearest step: atan2(0.2, 0.8) = 14.0 deg -> 1, equal weights 45 deg -> 5
    assert [dpa.step_for_weights((w, 1 - w)) for w in (1.0, 0.8, 0.5, 0.2, 0.0)] == [0, 1, 5, 8, 9]
    assert dpa.condition("list 2 fruits .", 4) == "<|system|> 4 list 2 fruits ."


def test_projection_standardises_each_objective_then_takes_the_dot_product():
    rewards = np.array([[1.0, -3.0], [3.0, -1.0], [2.0, -2.0]])
    scale = dpa.ObjectiveScale.fit(rewards)
    sd = np.std([1.0, 3.0, 2.0])
    assert scale.mean == pytest.approx((2.0, -2.0)) and scale.sd == pytest.approx((sd, sd))
    v = dpa.direction(3)
    assert scale.project(np.array([4.0, -2.0]), v) == pytest.approx(v[0] * 2 / sd)


def test_rejection_sampling_keeps_the_best_response_for_each_prompts_direction():
    from prefalign.pluralistic.dpa_recipe import score_samples

    scale = dpa.ObjectiveScale((0.0, 0.0), (1.0, 1.0))
    # z rewards per response: a is good on objective 1 only, b on objective 2 only, c on both moderately
    table = {"a": (2.0, -2.0), "b": (-2.0, 2.0), "c": (0.9, 0.9)}

    class Column:
        def __init__(self, k):
            self.k = k

        def score(self, prompts, responses, seed):
            return [table[y][self.k] for y in responses]

    texts = [["a", "b", "c"]] * 3
    rewards = score_samples([Column(0), Column(1)], ["p0", "p1", "p2"], texts, 0)
    assert rewards.shape == (3, 3, 2) and rewards[1, 2].tolist() == [0.9, 0.9]
    got = dpa.rsf_examples(["p0", "p1", "p2"], texts, rewards, scale, [0, 9, 5])
    # step 0: v = (1, 0) -> a; step 9: v = (0, 1) -> b; step 5: v = (0.71, 0.71) -> c (1.27 against 0)
    assert got == [("<|system|> 0 p0", "a"), ("<|system|> 9 p1", "b"), ("<|system|> 5 p2", "c")]
    assert dpa.draw_steps(5, 0) == dpa.draw_steps(5, 0) and set(dpa.draw_steps(200, 1)) == set(range(10))


def test_prefalign_dpa_trains_rounds_and_saves_a_steerable_model(tiny_model_dir, tmp_path):
    import json

    from typer.testing import CliRunner

    from prefalign.cli.main import app

    out = tmp_path / "dpa"
    result = CliRunner().invoke(app, ["dpa", f"model.name_or_path={tiny_model_dir}", "rounds=2", "samples=2",
                                      "prompts_per_round=6", "max_new_tokens=8", f"trainer.output_dir={out}",
                                      "trainer.max_steps=1", "trainer.batch_size=2", "trainer.progress=false"])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "config.json").exists() and (out / "round-0").is_dir() and (out / "round-1").is_dir()
    meta = json.loads((out / "dpa.json").read_text())
    assert meta["objectives"] == ["gold", "brevity"] and len(meta["scale"]["sd"]) == 2
    bad = CliRunner().invoke(app, ["dpa", "objectives=[gold]", f"trainer.output_dir={tmp_path / 'x'}"])
    assert bad.exit_code == 2 and "objectives" in bad.output
