"""The rollout source: the loop learns from the current policy's own samples.

Every `online.generate_every` optimizer steps a new round begins: the source takes the next prompts, samples
`online.samples` completions of each from the policy as it is now (eval mode, no grad), scores them, builds
pairs by `online.pairs`, and hands out the round's pairs over its steps, batch_size x grad_accum a step. A
round draws prompts until it has enough pairs (ties and empty samples make none), at most `MAX_DRAWS` times.

Sampling and scoring run under their own seeds, derived from (trainer.seed, round, draw), inside
`torch.random.fork_rng`, so they neither consume nor depend on the training RNG. A checkpoint keeps the
prompt cursor, the counters and the current round's pairs as token ids: a resumed run continues the round
with exactly those pairs and samples later rounds exactly as the interrupted run would have.

The pairs are the sampled token ids themselves (prompt ids as encoded for sampling, completion ids as drawn,
EOS included), so training scores exactly the sequences the policy produced."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefalign.config.schema import ModelConfig, OnlineConfig, RLConfig, TrainerConfig
from prefalign.data.errors import RowRef
from prefalign.data.prompts import cycling_slice
from prefalign.data.tokenize import TokenizedPair
from prefalign.decoding.sampling import sample
from prefalign.decoding.speculative import load_draft
from prefalign.online.pairs import PAIR_RULES, PairChoice, PairContext
from prefalign.online.scorers import Scorer
from prefalign.online.selection import ImplicitMargins, keep_dual_margin
from prefalign.training.batch_sources import BatchSource, StepBatches, split_step
from prefalign.training.metrics import keep_logged, read_jsonl

MAX_DRAWS = 4


class RolloutLog:
    """rollouts.jsonl: one line per prompt sampled (prompt, completions, scores, the policy step that sampled
    them, the pairs built and why). A resumed run first drops the rounds after its checkpoint's, which it
    samples again, so no rollout is written twice."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, records: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)

    def keep_rounds_up_to(self, last_round: int) -> None:
        keep_logged(self.path, lambda r: r["round"] <= last_round)


def rollout_draft(cfg: OnlineConfig | RLConfig, model: ModelConfig, tokenizer: Any,
                  device: torch.device) -> torch.nn.Module | None:
    """The draft model rollouts are sampled speculatively with (`online.draft`, `rl.draft`), if any; trusted
    and unpickled only as far as the run's model settings allow."""
    if cfg.draft is None:
        return None
    return load_draft(cfg.draft, tokenizer, device, model.trust_remote_code, model.allow_pickle)


def read_rollouts(path: Path) -> list[dict]:
    return read_jsonl(path)


@dataclass
class RoundStats:
    samples: int = 0
    pairs: int = 0
    ties: int = 0
    score_sum: float = 0.0
    generate_s: float = 0.0
    score_s: float = 0.0


class RolloutSource(BatchSource):
    """Pairs from the policy's own samples, a round every `generate_every` steps (see the module doc)."""

    def __init__(self, policy: torch.nn.Module, tokenizer: Any, prompts: list[str], scorer: Scorer,
                 cfg: OnlineConfig, trainer: TrainerConfig, collate: Callable[[list[Any], list[int]], Any],
                 rank: int = 0, world: int = 1, log: RolloutLog | None = None,
                 draft: torch.nn.Module | None = None, implicit: ImplicitMargins | None = None) -> None:
        if not trainer.max_steps:
            raise ValueError("online training needs trainer.max_steps (there are no epochs over sampled data)")
        self.policy, self.tokenizer, self.prompts, self.scorer = policy, tokenizer, prompts, scorer
        self.cfg, self.seed, self.collate, self.log, self.draft = cfg, trainer.seed, collate, log, draft
        if cfg.select != "none" and implicit is None:
            raise ValueError(f"online.select={cfg.select} needs the policy's implicit margins")
        self.implicit = implicit
        self.step_size = trainer.batch_size * trainer.grad_accum
        self.micro_size = trainer.micro_batch_size or trainer.batch_size
        self.rank, self.world = rank, world
        self.num_steps = trainer.max_steps
        self.round, self.cursor, self.labels, self.ties = -1, 0, 0, 0
        self.buffer: list[TokenizedPair] = []
        self.last = RoundStats()
        self._fresh = False  # whether the last step began a round (its sampling time is logged once)

    # -- the loop's side ----------------------------------------------------------------------------------

    def step(self, step: int) -> StepBatches:
        round_, position = divmod(step, self.cfg.generate_every)
        fresh = round_ != self.round
        if fresh:
            self._sample_round(round_, step)
        self._fresh = fresh
        start = position * self.step_size
        indices = list(range(start, min(start + self.step_size, len(self.buffer))))
        if not indices:
            raise ValueError(f"round {round_} built {len(self.buffer)} pairs, too few for step {step}: the scorer "
                             f"tied or the samples were empty in {MAX_DRAWS} draws of prompts; raise online.samples "
                             "or the temperature, or lower online.generate_every")
        micro, fillers = split_step(indices, self.micro_size, self.rank, self.world)
        return StepBatches([self.collate([self.buffer[i] for i in idx], idx) for idx in micro], fillers)

    def metrics(self) -> dict[str, float]:
        s, fresh = self.last, self._fresh
        return {"online/labels": float(self.labels), "online/ties": float(self.ties),
                "online/round": float(self.round), "online/round_pairs": float(s.pairs),
                "online/round_mean_score": s.score_sum / max(s.samples, 1),
                "time/generate": s.generate_s if fresh else 0.0, "time/score": s.score_s if fresh else 0.0}

    def state_dict(self) -> dict:
        pairs = [[p.prompt_ids, p.chosen_ids, p.rejected_ids, p.extras["score_chosen"], p.extras["score_rejected"]]
                 for p in self.buffer]
        return {"round": self.round, "cursor": self.cursor, "labels": self.labels, "ties": self.ties,
                "buffer": pairs, "last": vars(self.last)}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.round, self.cursor, self.labels, self.ties = state["round"], state["cursor"], state["labels"], state["ties"]
        self.buffer = [_pair(self.round, i, *row) for i, row in enumerate(state["buffer"])]
        self.last = RoundStats(**state["last"])
        if self.log is not None:
            self.log.keep_rounds_up_to(self.round)

    # -- sampling -----------------------------------------------------------------------------------------

    def _next_prompts(self, n: int) -> list[str]:
        out = cycling_slice(self.prompts, self.cursor, n)
        self.cursor += n
        return out

    def _sample_round(self, round_: int, step: int) -> None:
        need = self.step_size * self.cfg.generate_every
        wanted = need if self.cfg.select == "none" else math.ceil(need / self.cfg.select_keep)
        k = self.cfg.samples
        per_prompt = {"best_vs_worst": 1, "rso": self.cfg.rso_accepted // 2}.get(self.cfg.pairs, k * (k - 1) // 2)
        pairs: list[TokenizedPair] = []
        stats, records = RoundStats(), []
        for draw in range(MAX_DRAWS):
            if len(pairs) >= wanted:
                break
            prompts = self._next_prompts(math.ceil((wanted - len(pairs)) / per_prompt))
            seed = (self.seed * 1_000_003 + round_) * 31 + draw
            records += self._draw(prompts, seed, round_, step, pairs, stats)
        if self.cfg.select == "dual_margin":
            pairs = self._select(pairs[:wanted], need, records)
        self.buffer, self.round, self.last = pairs[:need], round_, stats
        if self.log is not None:
            self.log.append(records)

    def _select(self, pairs: list[TokenizedPair], need: int, records: list[dict]) -> list[TokenizedPair]:
        """Keep `need` of the round's pairs by their dual margin; the log says which were dropped."""
        kept = keep_dual_margin(pairs, self.implicit(pairs), need)
        new_index = {old: new for new, old in enumerate(kept)}
        for record in records:
            dropped = sum(i not in new_index for i in record["buffer_index"])
            record["buffer_index"] = [new_index.get(i) for i in record["buffer_index"]]
            if dropped:
                record["why"] += f"; {dropped} dropped by dual_margin"
        return [pairs[i] for i in kept]

    def _draw(self, prompts: list[str], seed: int, round_: int, step: int, pairs: list[TokenizedPair],
              stats: RoundStats) -> list[dict]:
        """Sample, score and pair one draw of prompts; appends to `pairs`, returns the log records."""
        k, rule = self.cfg.samples, PAIR_RULES[self.cfg.pairs]
        t0 = time.perf_counter()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            drawn = sample(self.policy, self.tokenizer, prompts, n=k, max_new_tokens=self.cfg.max_new_tokens,
                           temperature=self.cfg.temperature, batch_size=self.cfg.generation_batch_size, seed=seed,
                           draft=self.draft, draft_tokens=self.cfg.draft_tokens)
        t1 = time.perf_counter()
        texts = [[s.text for s in row] for row in drawn]
        flat = self.scorer.score([p for p in prompts for _ in range(k)], [t for row in texts for t in row], seed)
        self.labels += len(flat)
        stats.generate_s += t1 - t0
        stats.score_s += time.perf_counter() - t1
        records = []
        for i, (prompt, row) in enumerate(zip(prompts, drawn)):
            scores = flat[i * k:(i + 1) * k]
            context = PairContext(random.Random(seed * 1_000_003 + i), self.cfg.rso_beta, self.cfg.rso_accepted)
            choice = rule(scores, texts[i], context)
            choice = _above_margin(choice, scores, self.cfg.min_margin)
            self.ties += choice.ties
            stats.ties += choice.ties
            stats.samples += k
            stats.score_sum += sum(scores)
            used = []
            for a, b in choice.pairs:
                used.append(len(pairs))
                pairs.append(_pair(round_, len(pairs), row[a].prompt_ids, row[a].completion_ids,
                                   row[b].completion_ids, scores[a], scores[b]))
            stats.pairs += len(choice.pairs)
            records.append({"round": round_, "policy_step": step, "prompt": prompt, "completions": texts[i],
                            "scores": scores, "pairs": choice.pairs, "buffer_index": used, "why": choice.why})
        return records


def _above_margin(choice: PairChoice, scores: list[float], min_margin: float) -> PairChoice:
    """Drop the pairs whose score margin is under `online.min_margin` (ScPO's vote-margin filter)."""
    kept = [(a, b) for a, b in choice.pairs if scores[a] - scores[b] >= min_margin]
    if len(kept) == len(choice.pairs):
        return choice
    return PairChoice(kept, choice.ties, f"{choice.why}; {len(choice.pairs) - len(kept)} under margin {min_margin}")


def _pair(round_: int, i: int, prompt_ids: list[int], chosen_ids: list[int], rejected_ids: list[int],
          score_chosen: float, score_rejected: float) -> TokenizedPair:
    return TokenizedPair(list(prompt_ids), list(chosen_ids), list(rejected_ids), RowRef(f"rollouts round {round_}", i),
                         {"score_chosen": score_chosen, "score_rejected": score_rejected})
