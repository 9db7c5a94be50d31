"""The group rollout source: every `epochs x minibatches` steps the policy samples a new rollout.

A rollout takes the next trainer.batch_size x grad_accum x rl.minibatches prompts, samples rl.group_size
completions of each from the policy as it is now (eval mode, no grad), scores them with the reward terms,
and computes once, with no gradient: the sampling policy's per-token log-probs (the `old` of the importance
ratio; skipped when each rollout makes one step, where old = current exactly), the reference's (when a KL
term is on), the critic's values (PPO) and RTO's dense reward (prefalign/rl/dense_reward.py). The per-token
reward terms (KL in the reward, the dense reward), the advantages and the returns follow. The loop is then
handed the rollout's groups, shuffled per epoch, one mini-batch a step.

DAPO's dynamic sampling drops the groups whose rewards are all equal (zero advantage, no gradient) and
draws more prompts to fill the rollout, at most MAX_DRAWS times.

Sampling and scoring run under seeds derived from (trainer.seed, rollout, draw) in a forked RNG, as the
online source does. A checkpoint keeps the cursor, the counters, the KL coefficient and the current
rollout's groups with everything computed for them, so a resumed run continues exactly."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from prefalign.config.schema import RLConfig, TrainerConfig
from prefalign.data.prompts import cycling_slice
from prefalign.decoding.sampling import Sample, sample
from prefalign.models.logprobs import sequence_logps
from prefalign.models.reference import Reference
from prefalign.online.rollouts import RolloutLog
from prefalign.rl.advantages import ADVANTAGES, AdvantageInputs
from prefalign.rl.batch import PolicyBatch, RolloutGroup, grid
from prefalign.rl.constraints import lagrangian_reward, update_multiplier
from prefalign.rl.kl import adapt_kl_coef, kl_estimate
from prefalign.rl.rewards import RewardBreakdown, RewardTerms
from prefalign.training.batch_sources import BatchSource, StepBatches, split_step

MAX_DRAWS = 4


@dataclass
class RolloutStats:
    groups_drawn: int = 0
    zero_spread: int = 0
    reward_sum: float = 0.0
    reward_spread: float = 0.0  # summed within-group std
    samples: int = 0
    tokens: int = 0
    kl: float = 0.0  # mean per-sequence KL(pi_old || pi_ref), summed over tokens
    dense: float = 0.0  # mean per-sequence sum of RTO's token rewards
    entropy: float = 0.0  # mean token entropy of the sampling policy on its own samples (with demos)
    demo_reward: float = 0.0  # mean reward of the demonstrations
    cost_sum: float = 0.0
    term_means: dict | None = None
    generate_s: float = 0.0
    score_s: float = 0.0
    logps_s: float = 0.0


class GroupRolloutSource(BatchSource):
    """Policy batches from the policy's own groups of samples (see the module doc)."""

    def __init__(self, policy: torch.nn.Module, tokenizer: object, prompts: list[str], rewards: RewardTerms,
                 cfg: RLConfig, trainer: TrainerConfig, collate: Callable[..., PolicyBatch],
                 reference: Reference | None = None, critic: Callable | None = None, rank: int = 0,
                 world: int = 1, log: RolloutLog | None = None, dense: Callable | None = None,
                 demos: Callable[[str, list[int]], list[int]] | None = None,
                 draft: torch.nn.Module | None = None) -> None:
        if not trainer.max_steps:
            raise ValueError("rl needs trainer.max_steps (there are no epochs over sampled data)")
        self.policy, self.tokenizer, self.prompts, self.rewards = policy, tokenizer, prompts, rewards
        self.cfg, self.seed, self.collate, self.log, self.draft = cfg, trainer.seed, collate, log, draft
        self.reference, self.critic, self.dense, self.demos = reference, critic, dense, demos
        self.per_step = trainer.batch_size * trainer.grad_accum
        self.micro_size = trainer.micro_batch_size or trainer.batch_size
        self.rank, self.world = rank, world
        self.num_steps = trainer.max_steps
        self.steps_per_rollout = cfg.epochs * cfg.minibatches
        self.rollout, self.cursor, self.samples_total = -1, 0, 0
        self.kl_coef = cfg.kl.coef if cfg.kl.placement != "none" else 0.0
        self.rollout_kl_coef = self.kl_coef  # the coefficient the current rollout trains with
        self.rollout_entropy = 0.0  # the sampling policy's mean token entropy (measured when demos are on)
        self.costs = RewardTerms(cfg, [(cfg.cost.name, 1.0)], "rl.cost") if cfg.cost is not None else None
        self.multiplier = cfg.cost.multiplier_init if cfg.cost is not None else 0.0
        self.rollout_multiplier = self.multiplier
        self.groups: list[RolloutGroup] = []
        self.last = RolloutStats()
        self._fresh = False

    # -- the loop's side ----------------------------------------------------------------------------------

    def step_indices(self, step: int) -> list[int]:
        rollout, within = divmod(step, self.steps_per_rollout)
        if rollout != self.rollout:
            self._make_rollout(rollout, step)
            self._fresh = True
        else:
            self._fresh = False
        epoch, minibatch = divmod(within, self.cfg.minibatches)
        order = list(range(len(self.groups)))
        random.Random((self.seed * 1_000_003 + rollout) * 131 + epoch).shuffle(order)
        size = -(-len(order) // self.cfg.minibatches)
        return order[minibatch * size:(minibatch + 1) * size]

    def step(self, step: int) -> StepBatches:
        indices = self.step_indices(step)
        if not indices:
            raise ValueError(f"rollout {self.rollout} kept no group for step {step}: every group's rewards were "
                             f"equal in {MAX_DRAWS} draws (dynamic sampling); raise rl.group_size or the temperature")
        micro, fillers = split_step(indices, self.micro_size, self.rank, self.world)
        return StepBatches([self.collate([self.groups[i] for i in idx], idx, kl_coef=self.rollout_kl_coef,
                                         entropy=self.rollout_entropy) for idx in micro], fillers)

    def metrics(self) -> dict[str, float]:
        s, fresh = self.last, self._fresh
        n = max(s.samples, 1)
        out = {"rl/reward_mean": s.reward_sum / n, "rl/reward_std_in_group": s.reward_spread / max(s.groups_drawn, 1),
               "rl/zero_spread_groups": s.zero_spread / max(s.groups_drawn, 1), "rl/response_length": s.tokens / n,
               "rl/kl_rollout": s.kl, "rl/kl_coef": self.rollout_kl_coef, "rl/groups": float(len(self.groups)),
               "rl/cost_mean": s.cost_sum / n, "rl/dense_reward": s.dense, "rl/entropy": s.entropy,
               "rl/demo_reward": s.demo_reward, "rl/lagrange_multiplier": self.rollout_multiplier,
               "rl/rollout": float(self.rollout), "rl/samples": float(self.samples_total),
               "time/generate": s.generate_s if fresh else 0.0, "time/score": s.score_s if fresh else 0.0,
               "time/rollout_logps": s.logps_s if fresh else 0.0}
        return out | {f"rl/reward/{k}": v for k, v in (s.term_means or {}).items()}

    def state_dict(self) -> dict:
        return {"rollout": self.rollout, "cursor": self.cursor, "samples_total": self.samples_total,
                "kl_coef": self.kl_coef, "rollout_kl_coef": self.rollout_kl_coef, "multiplier": self.multiplier,
                "rollout_multiplier": self.rollout_multiplier, "rollout_entropy": self.rollout_entropy,
                "groups": [g.as_json() for g in self.groups], "last": vars(self.last)}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.rollout, self.cursor, self.samples_total = state["rollout"], state["cursor"], state["samples_total"]
        self.kl_coef, self.rollout_kl_coef = state["kl_coef"], state["rollout_kl_coef"]
        self.multiplier, self.rollout_multiplier = state["multiplier"], state["rollout_multiplier"]
        self.rollout_entropy = state.get("rollout_entropy", 0.0)
        self.groups = [RolloutGroup(**g) for g in state["groups"]]
        self.last = RolloutStats(**state["last"])
        if self.log is not None:
            self.log.keep_rounds_up_to(self.rollout)

    # -- making a rollout ---------------------------------------------------------------------------------

    def _next_prompts(self, n: int) -> list[str]:
        out = cycling_slice(self.prompts, self.cursor, n)
        self.cursor += n
        return out

    def _make_rollout(self, rollout: int, step: int) -> None:
        need = self.per_step * self.cfg.minibatches
        groups: list[RolloutGroup] = []
        stats, records = RolloutStats(term_means={}), []
        self.rollout_kl_coef, self.rollout_multiplier = self.kl_coef, self.multiplier
        for draw in range(MAX_DRAWS if self.cfg.dynamic_sampling else 1):
            if len(groups) >= need:
                break
            seed = (self.seed * 1_000_003 + rollout) * 31 + draw
            records += self._draw(self._next_prompts(need - len(groups)), seed, rollout, step, groups, stats)
        stats.term_means = {k: v / max(stats.samples, 1) for k, v in stats.term_means.items()}
        stats.demo_reward /= max(stats.groups_drawn, 1)
        self.groups, self.rollout, self.last = groups[:need], rollout, stats
        if self.cfg.cost is not None:
            c = self.cfg.cost
            self.multiplier = update_multiplier(self.multiplier, stats.cost_sum / max(stats.samples, 1), c.threshold,
                                                c.multiplier_lr)
        t0 = time.perf_counter()
        self._per_token(self.groups, stats)
        stats.logps_s = time.perf_counter() - t0
        if self.cfg.kl.target is not None and self.reference is not None:
            self.kl_coef = adapt_kl_coef(self.kl_coef, stats.kl, self.cfg.kl.target, self.cfg.kl.horizon,
                                         sum(len(g.completions) for g in self.groups))
        if self.log is not None:
            self.log.append(records)

    def _draw(self, prompts: list[str], seed: int, rollout: int, step: int, groups: list[RolloutGroup],
              stats: RolloutStats) -> list[dict]:
        g = self.cfg.group_size
        t0 = time.perf_counter()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            drawn = sample(self.policy, self.tokenizer, prompts, n=g, max_new_tokens=self.cfg.max_new_tokens,
                           temperature=self.cfg.temperature, batch_size=self.cfg.generation_batch_size, seed=seed,
                           draft=self.draft, draft_tokens=self.cfg.draft_tokens)
        t1 = time.perf_counter()
        self.samples_total += len(prompts) * g
        if self.demos is not None:  # SRFT: the prompt's demonstration joins its group as member g
            drawn = [row + [self._demonstration(p, row[0].prompt_ids)] for p, row in zip(prompts, drawn)]
        m = len(drawn[0])
        scored = self._score([s for row in drawn for s in row], seed, stats)
        stats.generate_s += t1 - t0
        stats.score_s += time.perf_counter() - t1
        records = []
        for i, (prompt, row) in enumerate(zip(prompts, drawn)):
            rewards = scored.total[i * m:(i + 1) * m]
            spread = statistics.pstdev(rewards) if m > 1 else 0.0
            kept = spread > 0 or not self.cfg.dynamic_sampling
            own = rewards[:g]  # the policy's samples; a demonstration's reward is logged on its own
            stats.groups_drawn += 1
            stats.zero_spread += spread == 0
            stats.reward_spread += spread
            stats.samples += g
            stats.reward_sum += sum(own)
            stats.demo_reward += sum(rewards[g:])
            stats.tokens += sum(len(s.completion_ids) for s in row[:g])
            for name, values in scored.terms.items():
                stats.term_means[name] = stats.term_means.get(name, 0.0) + sum(values[i * m:i * m + g])
            demos = [j >= g for j in range(m)] if m > g else None
            if kept:
                groups.append(RolloutGroup(list(row[0].prompt_ids), [list(s.completion_ids) for s in row], rewards,
                                           demos=demos))
            records.append({"round": rollout, "policy_step": step, "prompt": prompt,
                            "completions": [s.text for s in row], "rewards": rewards, "kept": kept,
                            "terms": {k: v[i * m:(i + 1) * m] for k, v in scored.terms.items()}}
                           | ({"demonstrations": demos} if demos else {}))
        return records

    def _demonstration(self, prompt: str, prompt_ids: list[int]) -> Sample:
        ids = self.demos(prompt, prompt_ids)
        return Sample(prompt, prompt_ids, ids, self.tokenizer.decode(ids, skip_special_tokens=True))

    def _score(self, flat: list[Sample], seed: int, stats: RolloutStats) -> RewardBreakdown:
        """The reward terms; under a cost constraint the Lagrangian reward, with the cost as a term."""
        prompts = [s.prompt for s in flat]
        scored = self.rewards.score(prompts, flat, seed)
        if self.costs is None:
            return scored
        costs = self.costs.score(prompts, flat, seed).total
        stats.cost_sum += sum(costs)
        shaped = [lagrangian_reward(r, c, self.rollout_multiplier, self.cfg.cost.normalise)
                  for r, c in zip(scored.total, costs)]
        return RewardBreakdown(shaped, scored.terms | {"cost": costs})

    def _per_token(self, groups: list[RolloutGroup], stats: RolloutStats) -> None:
        """Old and reference log-probs and values, then the KL-in-reward terms and the advantages, written
        into the groups as per-token lists."""
        if not groups:
            return
        kl_on = self.cfg.kl.placement != "none" and self.cfg.kl.coef > 0
        in_reward = kl_on and self.cfg.kl.placement == "reward"
        policy_pass = self.steps_per_rollout > 1 or self.critic is not None or in_reward
        rows = self._forward_passes(groups, policy_pass, kl_on)
        if "entropy" in rows:
            stats.entropy = self.rollout_entropy = own_mean_entropy(groups, rows.pop("entropy"))
        width = max(len(c) for g in groups for c in g.completions)
        grids = {name: grid(values, [0] * len(values), width) for name, values in rows.items()}
        mask = grid([[1.0] * len(c) for g in groups for c in g.completions], [0] * sum(map(_size, groups)), width)
        token_rewards = torch.zeros_like(mask)
        if "ref" in grids and "old" in grids:
            kl = kl_estimate(grids["old"], grids["ref"], self.cfg.kl.estimator) * mask
            stats.kl = float(kl.sum(-1).mean())
            if self.cfg.kl.placement == "reward":
                token_rewards = -self.rollout_kl_coef * kl
        rewards = torch.tensor([g.rewards for g in groups], dtype=torch.float32)
        if "dense_reward" in grids:
            dense = grids["dense_reward"] * mask
            stats.dense = float(dense.sum(-1).mean())
            if self.cfg.dpo_reward.placement == "token":
                token_rewards = token_rewards + dense
            else:
                rewards = rewards + dense.sum(-1).view_as(rewards)
        inputs = AdvantageInputs(rewards, token_rewards, mask, grids.get("old_values"), self.cfg.gamma, self.cfg.lam)
        out = ADVANTAGES[self.cfg.advantage](inputs)
        lengths = [len(c) for g in groups for c in g.completions]
        rows["advantages"] = [out.advantages[i, :n].tolist() for i, n in enumerate(lengths)]
        if out.returns is not None:
            rows["returns"] = [out.returns[i, :n].tolist() for i, n in enumerate(lengths)]
        first = 0
        for g in groups:
            for name, values in rows.items():
                setattr(g, name, values[first:first + _size(g)])
            first += _size(g)

    @torch.no_grad()
    def _forward_passes(self, groups: list[RolloutGroup], policy_pass: bool, ref_pass: bool) -> dict[str, list]:
        """Per-sequence lists of per-token values (group-major) of the passes asked for, a micro-batch of
        groups at a time, in the engine's own layout (so the values are those training would compute)."""
        out: dict[str, list] = {}
        device = next(self.policy.parameters()).device
        was_training = self.policy.training
        self.policy.eval()
        entropy = self.demos is not None  # SRFT's weights read the sampling policy's entropy
        for start in range(0, len(groups), self.micro_size):
            part = groups[start:start + self.micro_size]
            batch = self.collate(part, list(range(len(part)))).to(device)
            if policy_pass or entropy:
                res = sequence_logps(self.policy, batch.tokens, keep_tokens=True, keep_entropy=entropy,
                                     keep_final_hidden=self.critic is not None, temperature=self.cfg.temperature)
            if policy_pass:
                out.setdefault("old", []).extend(batch.rows(res.tokens))
                if self.critic is not None:
                    out.setdefault("old_values", []).extend(batch.rows(self.critic(res.final_hidden, batch.mask)))
            if entropy:
                out.setdefault("entropy", []).extend(batch.rows(res.entropy))
            if ref_pass and self.reference is not None:
                ref = self.reference.outputs(batch, keep_tokens=True, temperature=self.cfg.temperature)
                out.setdefault("ref", []).extend(batch.rows(ref.tokens))
            if self.dense is not None:
                out.setdefault("dense_reward", []).extend(batch.rows(self.dense(batch)))
        self.policy.train(was_training)
        return out


def own_mean_entropy(groups: list[RolloutGroup], entropy: list[list[float]]) -> float:
    """Mean token entropy over the policy's own samples (demonstrations left out), from per-sequence lists
    in the groups' order."""
    flags = [d for g in groups for d in g.demo_flags()]
    own = [h for row, is_demo in zip(entropy, flags) if not is_demo for h in row]
    return sum(own) / max(len(own), 1)


def _size(group: RolloutGroup) -> int:
    return len(group.completions)
