"""The length-controlled win rate's GLM on synthetic annotations drawn from the same logistic model."""

import json

import numpy as np
import pytest

from prefalign.data.errors import DataError
from prefalign.evaluation.length_control import (
    Annotation,
    instruction_difficulty,
    length_controlled_win_rates,
    read_annotations,
)
from tests.conftest import assert_report


def synthetic(n=2000, theta=0.4, phi=-1.2, psi=0.8, shift=300, seed=0, model="m", with_difficulty=True,
              difficulty=None):
    """Annotations whose preferences follow logit P = theta + phi * tanh(std_delta) + psi * difficulty."""
    rng = np.random.default_rng(seed)
    d = difficulty if difficulty is not None else rng.normal(size=n)
    len_1 = rng.integers(500, 1500, size=n)
    len_2 = np.maximum(1, len_1 + shift + rng.normal(0, 300, size=n).astype(int))
    delta = (len_1 - len_2).astype(float)
    std = delta / delta.std(ddof=1) if delta.std() > 0 else np.zeros(n)
    p = 1 / (1 + np.exp(-(theta + phi * np.tanh(std) + psi * d)))
    won = rng.random(n) < p
    return [Annotation(f"instruction {i}", "a" * int(len_1[i]), "b" * int(len_2[i]), "base", model,
                       1.0 if won[i] else 0.0, float(d[i]) if with_difficulty else None) for i in range(n)], p


def test_the_glm_recovers_a_known_length_effect_and_model_effect():
    rows, _ = synthetic()
    (result,) = length_controlled_win_rates(rows)
    coef = result.coefficients
    assert coef["length"] == pytest.approx(-1.2, abs=0.25)
    assert coef["model"] == pytest.approx(0.4, abs=0.15)
    assert coef["difficulty"] == pytest.approx(0.8, abs=0.15)
    # LC win rate: the model's win rate at equal length, i.e. mean sigmoid(theta + psi * d)
    d = np.array([r.difficulty for r in rows])
    truth = 100 * np.mean(1 / (1 + np.exp(-(0.4 + 0.8 * d))))
    assert result.lc_win_rate == pytest.approx(truth, abs=2.5)
    assert result.win_rate > result.lc_win_rate + 8  # longer outputs inflated the raw rate
    assert result.n == 2000 and result.lc_standard_error > 0


def test_equal_lengths_leave_the_raw_win_rate_unchanged():
    rows, _ = synthetic(n=600, shift=0, with_difficulty=False)
    rows = [Annotation(r.instruction, "x" * 100, "y" * 100, r.generator_1, r.generator_2, r.preference)
            for r in rows]
    (result,) = length_controlled_win_rates(rows)
    assert result.lc_win_rate == pytest.approx(result.win_rate, abs=0.5)


def test_soft_preferences_are_weights_not_rounded_labels():
    rows = [Annotation(f"i{k}", "x" * 50, "y" * 50, "base", "m", 0.7) for k in range(200)]
    (result,) = length_controlled_win_rates(rows)
    assert result.win_rate == pytest.approx(70.0)
    assert result.lc_win_rate == pytest.approx(70.0, abs=0.5)


def test_difficulty_is_estimated_jointly_from_several_models_on_the_same_instructions():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=400)
    rows = []
    for k, theta in enumerate([-0.5, 0.0, 0.5, 1.0]):
        # psi = -1: a harder instruction (higher difficulty) lowers every model's chance
        part, _ = synthetic(n=400, theta=theta, psi=-1.5, seed=10 + k, model=f"m{k}", with_difficulty=False,
                            difficulty=truth)
        rows += part
    estimated = instruction_difficulty(rows)
    est = np.array([estimated[f"instruction {i}"] for i in range(400)])
    assert np.corrcoef(est, truth)[0, 1] > 0.6
    results = {r.generator: r for r in length_controlled_win_rates(rows)}
    assert "difficulty" in results["m0"].coefficients
    lc = [results[f"m{k}"].lc_win_rate for k in range(4)]
    assert lc == sorted(lc)  # the model effects keep their order


def test_gamed_baseline_variants_pin_the_length_term():
    """A model that is the baseline made longer, judged by a length-biased judge: its raw win rate is
    inflated, its LC win rate is near 50 once the baseline's verbose/concise variants regularise phi."""
    rng = np.random.default_rng(2)
    rows = []
    for name, shift in [("base_verbose", 400), ("base_concise", -400), ("longer", 400)]:
        for i in range(300):
            l1 = int(rng.integers(500, 1500))
            l2 = max(1, l1 + shift + int(rng.normal(0, 150)))
            p = 1 / (1 + np.exp(-(0.004 * (l2 - l1))))  # the judge only likes length
            rows.append(Annotation(f"i{i}", "a" * l1, "b" * l2, "base", name, float(rng.random() < p)))
    results = {r.generator: r for r in length_controlled_win_rates(rows)}
    assert results["longer"].win_rate > 75
    assert results["longer"].lc_win_rate == pytest.approx(50, abs=8)


def test_alpacaeval_files_are_read_with_nulls_skipped_and_errors_located(tmp_path):
    good = tmp_path / "a.json"
    good.write_text(json.dumps([
        {"instruction": "q", "output_1": "a", "output_2": "bb", "generator_1": "base", "generator_2": "m",
         "preference": 2},
        {"instruction": "q2", "output_1": "a", "output_2": "bb", "generator_1": "base", "generator_2": "m",
         "preference": None},
        {"instruction": "q3", "output_1": "a", "output_2": "bb", "generator_1": "base", "generator_2": "m",
         "preference": 1.25}]))
    rows, skipped = read_annotations(good)
    assert skipped == 1 and [r.preference for r in rows] == [1.0, 0.25]
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps([{"instruction": "q", "output_1": "a", "output_2": "b", "generator_1": "base",
                                "generator_2": "m", "preference": 3}]))
    with pytest.raises(DataError, match=r"b.json, record 1, field 'preference'"):
        read_annotations(bad)
    missing = tmp_path / "c.json"
    missing.write_text(json.dumps([{"instruction": "q", "output_1": "a"}]))
    with pytest.raises(DataError, match="record 1, field 'output_2': missing"):
        read_annotations(missing)


def test_cli_prints_and_writes_per_generator_figures(tmp_path):
    from typer.testing import CliRunner

    from prefalign.cli.main import app

    rows, _ = synthetic(n=300)
    records = [{"instruction": r.instruction, "output_1": r.output_1, "output_2": r.output_2, "generator_1": "base",
                "generator_2": "m", "preference": 1 + r.preference} for r in rows]
    records.append(dict(records[0], preference=None))
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(records))
    result = CliRunner().invoke(app, ["eval", "lc-winrate", str(path), "--json", str(tmp_path / "lc.json")])
    assert result.exit_code == 0, result.output
    assert "1 null preferences skipped" in result.output
    figures = json.loads((tmp_path / "lc.json").read_text())["m"]
    assert figures["n"] == 300 and set(figures) >= {"win_rate", "lc_win_rate", "lc_standard_error"}
    assert "<td>m</td>" in (tmp_path / "lc.html").read_text()
    assert_report((tmp_path / "lc.html").read_text(), 0, ["Win rates (%)"])
    bad = CliRunner().invoke(app, ["eval", "lc-winrate", str(tmp_path / "missing.json")])
    assert bad.exit_code == 2


def toy_annotations(seed=0, n=300):
    """The toy task's length-biased judge comparing review answers with the baseline's: a model whose answers
    are the baseline's made longer (more sentences of the same quality), and the baseline's own verbose and
    concise variants."""
    import random

    from prefalign.toy.judges import length_biased_judge
    from prefalign.toy.world import Attributes, respond, split_prompts

    rng = random.Random(seed)
    _, held = split_prompts()
    prompts = [p for p in held if p.startswith(("review", "what do you think"))]
    judge = length_biased_judge(0.1)
    rows = []
    for i in range(n):
        prompt = rng.choice(prompts)
        attrs = Attributes(sentiment=rng.uniform(-1, 1), length=rng.randint(1, 3))
        base = respond(prompt, attrs, rng)
        variants = {"longer": Attributes(attrs.sentiment, length=attrs.length + 2),
                    "base_verbose": Attributes(attrs.sentiment, length=attrs.length + 2),
                    "base_concise": Attributes(attrs.sentiment, length=max(1, attrs.length - 1))}
        for name, v in variants.items():
            out = respond(prompt, v, rng)
            rows.append(Annotation(f"{prompt}#{i}", base, out, "base", name, judge(prompt, out, base)))
    return rows


def test_on_the_toy_task_a_longer_model_inflates_the_raw_win_rate_but_not_the_lc_win_rate():
    """Figures at seed 0 (also in the README): raw win rate 73.2, LC win rate 50.1."""
    results = {r.generator: r for r in length_controlled_win_rates(toy_annotations())}
    longer = results["longer"]
    assert longer.win_rate > 65
    assert abs(longer.lc_win_rate - 50) < 10 and longer.lc_win_rate < longer.win_rate - 10


def test_one_model_without_difficulties_gets_a_bootstrap_error_not_a_zero():
    """With one model and no instruction difficulty every prediction at equal length is the same, so
    AlpacaEval's s.e. (their spread) is 0 to rounding: it is reported as unknown. The bootstrap s.e. matches
    the LC win rate's actual spread over independent draws of the same synthetic judge."""
    draws = [length_controlled_win_rates(synthetic(n=400, seed=s, with_difficulty=False)[0], n_boot=0)[0]
             for s in range(12)]
    spread = np.std([r.lc_win_rate for r in draws], ddof=1)
    (one,) = length_controlled_win_rates(synthetic(n=400, seed=99, with_difficulty=False)[0], n_boot=200)
    assert one.lc_standard_error is None and draws[0].lc_bootstrap_se == 0.0
    assert 0.6 * spread < one.lc_bootstrap_se < 1.6 * spread, (one.lc_bootstrap_se, spread)
