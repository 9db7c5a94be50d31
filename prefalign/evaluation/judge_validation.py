"""Validating automatic judges against human grades (EvalGen: Shankar et al. 2024, "Who Validates the
Validators? Aligning LLM-Assisted Evaluation of LLM Outputs with Human Preferences").

A candidate evaluator fails or passes each output. Against human pass/fail grades:

    coverage             = share of the human-failed outputs that it fails      (catches what is bad)
    false failure rate   = share of the human-passed outputs that it fails      (flags what is fine)
    alignment            = harmonic mean of coverage and (1 - false failure rate)

A set of candidates fails an output when any member does. `select_assertions` picks the smallest set that
meets the user's thresholds (the most aligned among sets of that size). Grades arrive a few at a time and
people's criteria drift as they grade (the paper's observation), so `JudgeValidator` keeps every candidate's
verdicts and recomputes the ranking from whatever grades exist, newest grade per output winning."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import cohen_kappa_score

# A candidate: (prompt, output) -> True when the output FAILS the criterion.
Check = Callable[[str, str], bool]


@dataclass
class Candidate:
    name: str
    kind: str  # python | regex | reward | llm
    fails: Check


def regex_candidate(name: str, pattern: str, fail_if: str = "match") -> Candidate:
    """Fails an output when the pattern is found in it (`fail_if: match`) or when it is not (`no_match`)."""
    compiled = re.compile(pattern)
    if fail_if not in ("match", "no_match"):
        raise ValueError(f"candidate {name!r}: fail_if must be match or no_match, got {fail_if!r}")
    return Candidate(name, "regex", lambda _p, out: bool(compiled.search(out)) == (fail_if == "match"))


def predicate_candidate(name: str, passes: Callable[[str, str], bool]) -> Candidate:
    """A Python function (prompt, output) -> True when the output passes."""
    return Candidate(name, "python", lambda p, out: not passes(p, out))


def threshold_candidate(name: str, score: Callable[[str, str], float], threshold: float) -> Candidate:
    """A scorer (a reward model, the toy gold reward): fails outputs scored below the threshold."""
    return Candidate(name, "reward", lambda p, out: score(p, out) < threshold)


@dataclass
class CandidateReport:
    name: str
    coverage: float
    false_failure_rate: float
    alignment: float
    accuracy: float  # agreement with the human grades
    kappa: float  # Cohen's kappa with the human grades
    graded: int

    def as_dict(self) -> dict:
        return asdict(self)


def alignment_figures(fails: np.ndarray, human_pass: np.ndarray) -> tuple[float, float, float]:
    """(coverage, false failure rate, alignment) of fail flags against human grades."""
    bad, good = ~human_pass, human_pass
    coverage = float(fails[bad].mean()) if bad.any() else 1.0
    ffr = float(fails[good].mean()) if good.any() else 0.0
    keep = 1.0 - ffr
    alignment = 2 * coverage * keep / (coverage + keep) if coverage + keep > 0 else 0.0
    return coverage, ffr, alignment


def candidate_report(name: str, fails: np.ndarray, human_pass: np.ndarray) -> CandidateReport:
    fails, human_pass = np.asarray(fails, dtype=bool), np.asarray(human_pass, dtype=bool)
    coverage, ffr, alignment = alignment_figures(fails, human_pass)
    verdict_pass = ~fails
    agree = float((verdict_pass == human_pass).mean())
    # kappa is undefined when both raters give one label only; perfect agreement then counts as 1
    if len(set(verdict_pass)) == 1 and len(set(human_pass)) == 1:
        kappa = 1.0 if agree == 1.0 else 0.0
    else:
        kappa = float(cohen_kappa_score(human_pass, verdict_pass))
    return CandidateReport(name, coverage, ffr, alignment, agree, kappa, int(len(fails)))


@dataclass
class Selection:
    names: list[str]
    coverage: float
    false_failure_rate: float
    alignment: float
    meets_thresholds: bool


def select_assertions(fail_matrix: np.ndarray, names: list[str], human_pass: np.ndarray,
                      min_coverage: float = 0.8, max_false_failure_rate: float = 0.2,
                      max_exhaustive: int = 16) -> Selection:
    """The smallest set of candidates whose combined verdict (fail if any member fails) meets both thresholds,
    the most aligned among the sets of that size. Exhaustive up to `max_exhaustive` candidates, greedy on
    alignment beyond. When no set meets the thresholds, the most aligned set found is returned, flagged."""
    fail_matrix, human_pass = np.asarray(fail_matrix, dtype=bool), np.asarray(human_pass, dtype=bool)
    n = len(names)

    def figures(members: tuple[int, ...]) -> tuple[float, float, float]:
        return alignment_figures(fail_matrix[list(members)].any(0), human_pass)

    def ok(f: tuple[float, float, float]) -> bool:
        return f[0] >= min_coverage and f[1] <= max_false_failure_rate

    best: tuple[tuple[int, ...], tuple[float, float, float]] | None = None
    if n <= max_exhaustive:
        for size in range(1, n + 1):
            scored = [(m, figures(m)) for m in itertools.combinations(range(n), size)]
            meeting = [s for s in scored if ok(s[1])]
            if meeting:
                members, f = max(meeting, key=lambda s: s[1][2])
                return Selection([names[i] for i in members], *f, True)
            top = max(scored, key=lambda s: s[1][2])
            best = top if best is None or top[1][2] > best[1][2] else best
    else:
        members: tuple[int, ...] = ()
        while len(members) < n:
            options = [(members + (i,), figures(members + (i,))) for i in range(n) if i not in members]
            members, f = max(options, key=lambda s: s[1][2])
            if ok(f):
                return Selection([names[i] for i in members], *f, True)
            best = (members, f) if best is None or f[2] > best[1][2] else best
    members, f = best
    return Selection([names[i] for i in members], *f, False)


class JudgeValidator:
    """Candidates' verdicts on every output, computed once; human grades added as they come."""

    def __init__(self, candidates: list[Candidate], prompts: list[str], outputs: list[str]) -> None:
        self.names = [c.name for c in candidates]
        self.fails = np.array([[c.fails(p, o) for p, o in zip(prompts, outputs)] for c in candidates], dtype=bool)
        self.grades: dict[int, bool] = {}

    def grade(self, index: int, passed: bool) -> None:
        """A human grade for output `index`; a later grade of the same output replaces the earlier one."""
        if not 0 <= index < self.fails.shape[1]:
            raise IndexError(f"output {index} does not exist ({self.fails.shape[1]} outputs)")
        self.grades[index] = passed

    def _graded(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.grades:
            raise ValueError("no human grades yet")
        idx = np.array(sorted(self.grades))
        return idx, np.array([self.grades[i] for i in idx])

    def reports(self) -> list[CandidateReport]:
        """Every candidate against the grades so far, most aligned first."""
        idx, human = self._graded()
        reports = [candidate_report(n, self.fails[k, idx], human) for k, n in enumerate(self.names)]
        return sorted(reports, key=lambda r: -r.alignment)

    def select(self, min_coverage: float = 0.8, max_false_failure_rate: float = 0.2) -> Selection:
        idx, human = self._graded()
        return select_assertions(self.fails[:, idx], self.names, human, min_coverage, max_false_failure_rate)


def llm_judge_candidate(name: str, model: object, tokenizer: object, template: str, pass_word: str = " yes",
                        fail_word: str = " no") -> Candidate:
    """A local causal LM asked a yes/no question: `template` with {prompt} and {output} filled in; the output
    fails when the model's next token is likelier to be `fail_word` than `pass_word`."""
    import torch

    yes, no = (tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (pass_word, fail_word))

    @torch.no_grad()
    def fails(prompt: str, output: str) -> bool:
        ids = tokenizer(template.format(prompt=prompt, output=output), return_tensors="pt")["input_ids"]
        logits = model(input_ids=ids).logits[0, -1]
        return bool(logits[no] > logits[yes])

    return Candidate(name, "llm", fails)


def function_from_file(spec: str, code_files: list[Path], base: Path) -> Callable[[str, str], bool]:
    """`FILE.py:function`, where FILE (relative to `base`, the candidates file's folder) is one of the files the
    user named on the command line: a candidates file is code, and may call nothing else."""
    import importlib.util

    file, _, attr = spec.rpartition(":")
    path = (base / file).resolve()
    allowed = {Path(f).resolve() for f in code_files}
    if not file.endswith(".py") or path not in allowed:
        named = ", ".join(str(f) for f in code_files) or "none"
        raise ValueError(f"python candidate {spec!r}: it must name FILE.py:function with FILE given by --code "
                         f"(files given: {named}); importable modules are not called")
    module_spec = importlib.util.spec_from_file_location(f"prefalign_candidates_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, attr, None)):
        raise ValueError(f"python candidate {spec!r}: {path} defines no function {attr!r}")
    return getattr(module, attr)


def load_candidates(specs: list[dict], source: str = "candidates", code_files: list[Path] | None = None) -> list[Candidate]:
    """Candidates from config entries: {name, regex, fail_if}, {name, python: "FILE.py:function"} (returns True
    when an output passes; FILE must be one the user named with --code), {name, gold: toy, threshold},
    {name, reward_model: folder, threshold}, {name, llm: model, template, pass_word, fail_word}."""
    out = []
    for i, spec in enumerate(specs):
        name = spec.get("name", f"candidate_{i}")
        if "regex" in spec:
            out.append(regex_candidate(name, spec["regex"], spec.get("fail_if", "match")))
        elif "python" in spec:
            function = function_from_file(str(spec["python"]), code_files or [], Path(source).resolve().parent)
            out.append(predicate_candidate(name, function))
        elif "gold" in spec:
            from prefalign.toy.gold_reward import gold_reward

            out.append(threshold_candidate(name, gold_reward, float(spec.get("threshold", 0.0))))
        elif "reward_model" in spec:
            from prefalign.rewards.scoring import RewardScorer

            scorer = RewardScorer(spec["reward_model"])
            out.append(threshold_candidate(name, scorer.score_one, float(spec.get("threshold", 0.0))))
        elif "llm" in spec:
            from prefalign.config.schema import ModelConfig
            from prefalign.models.loading import load_causal_lm, load_tokenizer

            cfg = ModelConfig(name_or_path=spec["llm"])
            out.append(llm_judge_candidate(name, load_causal_lm(cfg).eval(), load_tokenizer(cfg), spec["template"],
                                           spec.get("pass_word", " yes"), spec.get("fail_word", " no")))
        else:
            raise ValueError(f"{source}, entry {i} ({name!r}): expected one of regex, python, gold, reward_model, llm")
    return out
