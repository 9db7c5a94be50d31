"""EvalGen's candidate figures by hand, its selection on a case with a known best set, and re-ranking as
grades arrive."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from prefalign.cli.main import app
from prefalign.evaluation.judge_validation import (
    JudgeValidator,
    candidate_report,
    predicate_candidate,
    regex_candidate,
    select_assertions,
)
from tests.conftest import assert_report, write_jsonl


def test_coverage_false_failures_alignment_and_kappa_by_hand():
    human_pass = np.array([True, True, True, False, False])
    fails = np.array([True, False, False, True, False])  # fails 1 of 3 good, 1 of 2 bad
    r = candidate_report("c", fails, human_pass)
    assert r.coverage == pytest.approx(0.5) and r.false_failure_rate == pytest.approx(1 / 3)
    assert r.alignment == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert r.accuracy == pytest.approx(3 / 5)
    # kappa: p_o = 0.6; human pass 3/5, verdict pass 3/5 -> p_e = 0.6*0.6 + 0.4*0.4 = 0.52
    assert r.kappa == pytest.approx((0.6 - 0.52) / (1 - 0.52))


def test_selection_finds_the_smallest_set_that_meets_the_thresholds():
    """Outputs fail humans for two reasons, A (0-3) and B (4-7); 8-11 are fine. Candidate a catches A, b catches
    B, wide catches both but fails half the good outputs, noise is random. Only {a, b} meets 0.9 / 0.1."""
    human_pass = np.array([False] * 8 + [True] * 4)
    a = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    b = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    wide = np.array([1] * 8 + [1, 1, 0, 0], dtype=bool)
    noise = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0], dtype=bool)
    sel = select_assertions(np.stack([a, b, wide, noise]), ["a", "b", "wide", "noise"], human_pass, 0.9, 0.1)
    assert sel.meets_thresholds and sorted(sel.names) == ["a", "b"]
    assert sel.coverage == 1.0 and sel.false_failure_rate == 0.0
    loose = select_assertions(np.stack([a, b, wide, noise]), ["a", "b", "wide", "noise"], human_pass, 0.9, 0.5)
    assert loose.names == ["wide"]  # one candidate is enough when half the good outputs may fail
    impossible = select_assertions(np.stack([noise]), ["noise"], human_pass, 1.0, 0.0)
    assert not impossible.meets_thresholds


def test_rankings_follow_the_grades_as_criteria_drift():
    """The grader first fails only rude outputs, then starts failing long ones too: the ranking follows."""
    outputs = ["you idiot", "short ok", "a very long answer that rambles on and on", "fine",
               "another very long answer that rambles on", "shut up idiot"]
    rude = regex_candidate("rude", r"idiot|shut up")
    long = predicate_candidate("short", lambda p, o: len(o.split()) <= 4)
    v = JudgeValidator([rude, long], [""] * 6, outputs)
    for i, passed in [(0, False), (1, True), (2, True), (3, True)]:  # long answers still pass
        v.grade(i, passed)
    assert [r.name for r in v.reports()] == ["rude", "short"]
    for i, passed in [(2, False), (4, False), (5, False)]:  # the grader changed their mind about output 2
        v.grade(i, passed)
    ranking = v.reports()
    assert {r.name: r.coverage for r in ranking} == {"rude": 0.5, "short": 0.5}
    assert sorted(v.select(1.0, 0.0).names) == ["rude", "short"]
    with pytest.raises(IndexError):
        v.grade(9, True)


def test_cli_reads_outputs_grades_and_candidates(tmp_path):
    outputs = write_jsonl(tmp_path / "outputs.jsonl", [
        {"prompt": "what is 2 plus 3 ?", "output": "the answer is 5 ."},
        {"prompt": "what is 2 plus 3 ?", "output": "the answer is 7 ."},
        {"prompt": "review the red lamp .", "output": "the lamp is great ."},
        {"prompt": "review the red lamp .", "output": "the lamp is awful . the lamp is awful ."}])
    grades = write_jsonl(tmp_path / "grades.jsonl", [{"index": 0, "pass": True}, {"index": 1, "pass": False},
                                                     {"index": 2, "pass": True}, {"index": 3, "pass": False}])
    cands = tmp_path / "candidates.yaml"
    cands.write_text("- {name: gold, gold: toy, threshold: 0.5}\n- {name: awful, regex: awful}\n")
    result = CliRunner().invoke(app, ["judges", "validate", str(outputs), str(grades), str(cands), "--every", "2",
                                      "--json", str(tmp_path / "j.json")])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "j.json").read_text())
    assert figures["candidates"][0]["name"] == "gold" and figures["candidates"][0]["alignment"] == 1.0
    assert figures["selection"]["names"] == ["gold"] and len(figures["history"]) == 2
    report = (tmp_path / "j.html").read_text()
    assert "Judge alignment with the human grades" in report and "<td>awful</td>" in report
    assert_report(report, 0, ["Judge alignment with the human grades", "Ranking as grades arrived"])
    cands.write_text("- {name: odd, nonsense: 1}\n")
    bad = CliRunner().invoke(app, ["judges", "validate", str(outputs), str(grades), str(cands)])
    assert bad.exit_code == 2 and "entry 0 ('odd')" in bad.output


def test_llm_judge_candidate_compares_the_pass_and_fail_words(toy_tokenizer):
    """A stand-in LM that says the fail word exactly when the output mentions 'awful'."""
    import torch

    from prefalign.evaluation.judge_validation import llm_judge_candidate

    yes, no = (toy_tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" great", " awful"))
    awful_id = no

    class Stub(torch.nn.Module):
        def forward(self, input_ids):
            logits = torch.zeros(1, input_ids.shape[1], len(toy_tokenizer))
            logits[0, -1, no if (input_ids == awful_id).any() else yes] = 1.0
            return type("Out", (), {"logits": logits})()

    judge = llm_judge_candidate("llm", Stub(), toy_tokenizer, "{prompt} {output} so it is", " great", " awful")
    assert judge.fails("review the red lamp .", "the lamp is awful .")
    assert not judge.fails("review the red lamp .", "the lamp is great .")
