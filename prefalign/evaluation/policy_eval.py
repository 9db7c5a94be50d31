"""Compare policies with a baseline on the same prompts: win rate (with a bootstrap interval) by a pairwise
judge, mean reward, length, KL from samples, and the length-controlled win rate."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from prefalign.atomic_files import write_text_atomic
from prefalign.data.collate import pad_sequences
from prefalign.decoding.sampling import Sample, sample
from prefalign.evaluation import plots
from prefalign.evaluation.length_control import Annotation, LCWinRate, length_controlled_win_rates
from prefalign.evaluation.pairwise_judges import BatchReward, PairwiseJudge, RewardJudge
from prefalign.evaluation.report import write_report
from prefalign.models.logprobs import sequence_logps


@dataclass
class PolicyComparison:
    n_prompts: int
    policy_reward: float
    baseline_reward: float
    policy_length: float
    baseline_length: float
    win_rate: float
    win_rate_ci: tuple[float, float]
    kl: float

    def as_dict(self) -> dict:
        return asdict(self)


def win_rate_with_ci(outcomes: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Mean of per-prompt outcomes (1 win, 0.5 tie, 0 loss) and a 95% percentile-bootstrap interval."""
    x = np.asarray(outcomes, dtype=float)
    boots = np.random.default_rng(seed).choice(x, size=(n_boot, len(x))).mean(axis=1)
    return float(x.mean()), (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))


@torch.no_grad()
def completion_logps(model: torch.nn.Module, samples: list[Sample], pad_id: int, batch_size: int = 64) -> torch.Tensor:
    """log pi(y|x) of each sample's completion under `model`."""
    model.eval()
    out = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        batch = pad_sequences([(s.prompt_ids, s.completion_ids) for s in chunk], pad_id)
        out.append(sequence_logps(model, batch.to(next(model.parameters()).device)).sum.float().cpu())
    return torch.cat(out)


@dataclass
class PolicyResult:
    name: str
    n_prompts: int
    mean_reward: float | None  # None when no reward was given (an LM judge alone)
    mean_length: float  # tokens
    win_rate: float  # against the baseline, ties half; soft judges give soft outcomes
    win_rate_ci: tuple[float, float]
    kl: float  # KL(policy || reference), nats per response, from the policy's own samples
    lc_win_rate: float | None  # AlpacaEval 2's length-controlled win rate (fractions here)
    lc_standard_error: float | None


@dataclass
class Evaluation:
    judge: str
    baseline_reward: float | None
    baseline_length: float
    policies: list[PolicyResult]
    samples: list[dict]  # one row per (prompt, model): text, tokens, reward, and for policies p_win

    def as_dict(self) -> dict:
        return {"judge": self.judge, "baseline": {"mean_reward": self.baseline_reward,
                                                  "mean_length": self.baseline_length},
                "policies": [asdict(p) for p in self.policies]}


def _lc(annotations: list[Annotation]) -> dict[str, LCWinRate]:
    if len({a.instruction for a in annotations}) < 10:  # too few instructions for 5-fold grouped CV
        return {}
    return {r.generator: r for r in length_controlled_win_rates(annotations, regularize_to_baseline=0.0)}


def evaluate_policies(policies: dict[str, torch.nn.Module], baseline: torch.nn.Module, tokenizer: object,
                      prompts: list[str], judge: PairwiseJudge, reward: BatchReward | None = None,
                      reference: torch.nn.Module | None = None, seed: int = 0, max_new_tokens: int = 48,
                      temperature: float = 1.0) -> Evaluation:
    """One sample per prompt from each policy (seed `seed`) and from the baseline (seed `seed + 1`), same
    sampling settings for all (no truncation of the distribution, so the samples estimate KL honestly).

    Each policy's response is judged against the baseline's on the same prompt. KL(policy || reference) per
    response is the mean over the policy's samples of log pi(y|x) - log pi_ref(y|x), unbiased since the samples
    come from pi itself; the reference defaults to the baseline. All models share `tokenizer`."""
    reference = reference if reference is not None else baseline
    theirs = [s[0] for s in sample(baseline, tokenizer, prompts, seed=seed + 1, max_new_tokens=max_new_tokens,
                                   temperature=temperature)]
    base_texts = [s.text for s in theirs]
    r_base = reward(prompts, base_texts) if reward else None
    samples = [{"model": "baseline", "prompt": s.prompt, "text": s.text, "tokens": len(s.completion_ids),
                "reward": None if r_base is None else r_base[i]} for i, s in enumerate(theirs)]
    annotations, partial = [], []
    for name, policy in policies.items():
        ours = [s[0] for s in sample(policy, tokenizer, prompts, seed=seed, max_new_tokens=max_new_tokens,
                                     temperature=temperature)]
        texts = [s.text for s in ours]
        p_win = judge.prefer(prompts, texts, base_texts)
        r_ours = reward(prompts, texts) if reward else None
        win, ci = win_rate_with_ci(p_win, seed=seed)
        kl = (completion_logps(policy, ours, tokenizer.pad_token_id)
              - completion_logps(reference, ours, tokenizer.pad_token_id)).mean().item()
        partial.append(PolicyResult(name, len(prompts), None if r_ours is None else float(np.mean(r_ours)),
                                    float(np.mean([len(s.completion_ids) for s in ours])), win, ci, kl, None, None))
        samples += [{"model": name, "prompt": s.prompt, "text": s.text, "tokens": len(s.completion_ids),
                     "reward": None if r_ours is None else r_ours[i], "p_win": p_win[i]} for i, s in enumerate(ours)]
        annotations += [Annotation(p, b, t, "baseline", name, pw) for p, b, t, pw in zip(prompts, base_texts, texts, p_win)]
    lc = _lc(annotations)
    for result in partial:
        if result.name in lc:
            result.lc_win_rate = lc[result.name].lc_win_rate / 100
            se = lc[result.name].lc_standard_error
            result.lc_standard_error = None if se is None else se / 100
    return Evaluation(judge.name, None if r_base is None else float(np.mean(r_base)),
                      float(np.mean([len(s.completion_ids) for s in theirs])), partial, samples)


def compare_policies(policy: torch.nn.Module, baseline: torch.nn.Module, tokenizer: object, prompts: list[str],
                     reward: Callable[[str, str], float], seed: int = 0, max_new_tokens: int = 48) -> PolicyComparison:
    """One policy against the baseline, judged by `reward(prompt, response)` (the higher reward wins)."""
    def batch_reward(ps: list[str], rs: list[str]) -> list[float]:
        return [reward(p, r) for p, r in zip(ps, rs)]

    ev = evaluate_policies({"policy": policy}, baseline, tokenizer, prompts, RewardJudge(batch_reward, "reward"),
                           batch_reward, seed=seed, max_new_tokens=max_new_tokens)
    r = ev.policies[0]
    return PolicyComparison(n_prompts=r.n_prompts, policy_reward=r.mean_reward, baseline_reward=ev.baseline_reward,
                            policy_length=r.mean_length, baseline_length=ev.baseline_length, win_rate=r.win_rate,
                            win_rate_ci=r.win_rate_ci, kl=r.kl)


def evaluation_sections(ev: Evaluation) -> list[tuple[str, str]]:
    """The report's plots and table: reward distributions, length vs reward, the reward/KL frontier."""
    header = ["policy", "win rate", "95% CI", "LC win rate", "mean reward", "mean length", "KL"]
    rows = [[p.name, p.win_rate, f"{p.win_rate_ci[0]:.3f}-{p.win_rate_ci[1]:.3f}",
             "n/a" if p.lc_win_rate is None else p.lc_win_rate, "n/a" if p.mean_reward is None else p.mean_reward,
             p.mean_length, p.kl] for p in ev.policies]
    sections = [(f"Against the baseline, judged by {ev.judge}", plots.table(header, rows))]
    if ev.baseline_reward is not None:
        by_model: dict[str, list[dict]] = {}
        for s in ev.samples:
            by_model.setdefault(s["model"], []).append(s)
        sections += [
            ("Reward distributions", plots.reward_distributions({m: [s["reward"] for s in v] for m, v in by_model.items()})),
            ("Length vs reward", plots.length_vs_reward({m: ([s["tokens"] for s in v], [s["reward"] for s in v])
                                                         for m, v in by_model.items()})),
            ("Reward/KL frontier", plots.reward_kl_frontier([("baseline", 0.0, ev.baseline_reward)] + [
                (p.name, p.kl, p.mean_reward) for p in ev.policies])),
        ]
    return sections + [("Example completions", example_completions(ev.samples))]


def example_completions(samples: list[dict], n: int = 4) -> str:
    """The first `n` prompts, each model's sample side by side (with its reward where there is one)."""
    by_prompt: dict[str, dict[str, dict]] = {}
    for s in samples:
        by_prompt.setdefault(s["prompt"], {})[s["model"]] = s
    models = list(dict.fromkeys(s["model"] for s in samples))
    rows = [[prompt] + [_shown(by_model.get(m)) for m in models] for prompt, by_model in list(by_prompt.items())[:n]]
    return plots.table(["prompt", *models], rows)


def _shown(sample: dict | None) -> str:
    if sample is None:
        return ""
    return sample["text"] + ("" if sample.get("reward") is None else f"  (reward {sample['reward']:.3f})")


def write_evaluation(out: Path, ev: Evaluation, title: str = "prefalign eval") -> dict[str, Path]:
    """eval.json (every figure), samples.jsonl (every response, its reward and P(win)), report.html."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "eval.json", "samples": out / "samples.jsonl", "report": out / "report.html"}
    write_text_atomic(paths["json"], json.dumps(ev.as_dict(), indent=2))
    write_text_atomic(paths["samples"], "".join(json.dumps(s) + "\n" for s in ev.samples))
    summary = {k: v for k, v in ev.as_dict().items() if k != "policies"}
    write_report(paths["report"], title, summary, sections=evaluation_sections(ev))
    return paths
