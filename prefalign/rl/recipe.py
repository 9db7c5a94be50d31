"""`prefalign rl`: GRPO, Dr. GRPO, DAPO, GSPO, CISPO, RLOO, REINFORCE++ and PPO from one config.

The same loop, packed engine, processes and exact resume as `prefalign train`; the batch source is the group
rollout source (prefalign/rl/rollouts.py), the objective the policy-gradient objective. A method is a choice
of advantage estimator, policy loss, aggregation and KL placement (the example configs in examples/rl/)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from rich.console import Console

from prefalign.config.schema import RLConfig, RLTrainConfig
from prefalign.losses.registry import LOSSES, build_losses, loss_kind
from prefalign.models.engine import precision_context
from prefalign.models.loading import disable_dropout, frozen_model, load_policy, load_tokenizer
from prefalign.models.reference import FrozenCopyReference
from prefalign.online.recipe import OnlineRun, online_prompts
from prefalign.online.rollouts import RolloutLog, rollout_draft
from prefalign.rl.advantages import ADVANTAGES
from prefalign.rl.batch import collate_groups
from prefalign.rl.demonstrations import DemonstrationIds, load_demonstrations
from prefalign.rl.dense_reward import DPOTokenReward
from prefalign.rl.elastic_reset import ElasticReset
from prefalign.rl.objective import PolicyObjective
from prefalign.rl.rewards import RewardTerms
from prefalign.rl.rollouts import GroupRolloutSource
from prefalign.training.loop import LoopData
from prefalign.training.preference import build_reference, start_run, train_and_export


def check_rl_config(cfg: RLTrainConfig, losses: list) -> None:
    """Refuse combinations that cannot run, before any model is loaded."""
    rl = cfg.rl
    if loss_kind(losses) != "policy":
        raise ValueError("prefalign rl trains policy losses (ppo_clip, gspo, cispo, policy_gradient, value)")
    if rl.advantage not in ADVANTAGES:
        raise ValueError(f"rl.advantage: unknown estimator {rl.advantage!r}; known: {', '.join(sorted(ADVANTAGES))}")
    has_critic = any("values" in t.spec.needs for t in losses)
    if (rl.advantage == "gae") != has_critic:
        raise ValueError("rl.advantage gae and a `value` loss term go together (PPO's critic)")
    if rl.kl.placement != "none" and rl.kl.coef > 0 and cfg.reference.kind == "precomputed":
        raise ValueError("reference.kind=precomputed needs a fixed dataset; use copy or adapter")
    if rl.kl.target is not None and rl.kl.placement != "reward":
        raise ValueError("rl.kl.target adapts the KL penalty in the reward, measured at sampling time; "
                         "set rl.kl.placement: reward")
    if cfg.distributed.strategy == "fsdp2":
        raise ValueError("prefalign rl runs in one process or with DDP; every rank samples with the whole model")
    wants_demos = any("demonstrations" in t.spec.needs for t in losses)
    if wants_demos != (rl.demonstrations is not None):
        learners = ", ".join(sorted(n for n, spec in LOSSES.items() if "demonstrations" in spec.needs))
        raise ValueError(f"rl.demonstrations and a loss that learns from them ({learners}) go together: they join "
                         "a demonstration to every group and learn from both")
    if rl.dpo_reward is not None and rl.dynamic_sampling:
        raise ValueError("rl.dynamic_sampling drops groups whose outcome rewards are equal, which ignores "
                         "rl.dpo_reward's token rewards; turn one off")
    if rl.group_size < 2 and rl.advantage in ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"):
        raise ValueError(f"rl.advantage {rl.advantage} compares samples of a prompt: rl.group_size must be >= 2")


def dense_reward(cfg: RLTrainConfig, device: torch.device) -> DPOTokenReward | None:
    """RTO's token-wise DPO reward from `rl.dpo_reward`, its two models frozen on the policy's device."""
    d = cfg.rl.dpo_reward
    if d is None:
        return None
    dpo = FrozenCopyReference(frozen_model(cfg.model, d.model).to(device))
    reference = FrozenCopyReference(frozen_model(cfg.model, d.reference or cfg.model.name_or_path).to(device))
    return DPOTokenReward(dpo, reference, d.beta)


def demonstrations(rl: RLConfig, prompts: list[str], tokenizer: object) -> DemonstrationIds | None:
    """SRFT's demonstration per prompt, as token ids after the sampler's prompt ids."""
    if rl.demonstrations is None:
        return None
    return DemonstrationIds(tokenizer, load_demonstrations(rl.demonstrations, prompts))


def train_rl(cfg: RLTrainConfig, resume: bool = False, console: Console | None = None,
             on_step: Callable[[int, dict], None] | None = None, overwrite: bool = False) -> OnlineRun:
    losses = build_losses(cfg.loss)
    check_rl_config(cfg, losses)
    cfg, processes, console = start_run(cfg, console, resume, overwrite)
    if processes.strategy == "fsdp2":
        raise ValueError("prefalign rl runs in one process or with DDP; every rank samples with the whole model")
    run_dir = Path(cfg.trainer.output_dir)
    tokenizer = load_tokenizer(cfg.model)
    policy = load_policy(cfg.model).to(processes.device)
    disable_dropout(policy)
    kl_on = cfg.rl.kl.placement != "none" and cfg.rl.kl.coef > 0
    with precision_context(cfg.engine, policy):
        reference = build_reference(cfg, policy, [], list, [], processes, console,
                                    needed_by="rl.kl" if kl_on else None)
    if isinstance(reference, FrozenCopyReference):
            disable_dropout(reference.model)
    objective = PolicyObjective(losses, cfg.rl, cfg.engine.logp_chunk)
    objective.build_modules(policy)  # the critic exists before the first rollout needs its values
    collate = partial(collate_groups, pad_id=tokenizer.pad_token_id, packed=cfg.engine.packed,
                      capacity=cfg.engine.pack_tokens)
    log = RolloutLog(run_dir / "rollouts.jsonl") if processes.is_main else None
    if log is not None and not resume and log.path.exists():
        log.path.unlink()
    prompts = online_prompts(cfg.rl.prompts, cfg.trainer.seed)
    source = GroupRolloutSource(policy, tokenizer, prompts, RewardTerms(cfg.rl), cfg.rl, cfg.trainer, collate,
                                reference, objective.values if objective.critic else None, processes.rank,
                                processes.world, log, dense_reward(cfg, processes.device),
                                demonstrations(cfg.rl, prompts, tokenizer),
                                rollout_draft(cfg.rl, cfg.model, tokenizer, processes.device))
    t = cfg.trainer
    console.print(f"rl: {len(prompts)} prompts, {t.batch_size * t.grad_accum} x {cfg.rl.group_size} samples a "
                  f"step, advantage {cfg.rl.advantage}, losses {', '.join(x.name for x in cfg.loss)}, "
                  f"{cfg.rl.aggregation}, KL {cfg.rl.kl.placement} {cfg.rl.kl.coef}", soft_wrap=True)
    reset = cfg.rl.elastic_reset
    hooks = ElasticReset(policy, reset.every, reset.decay) if reset is not None else None
    result, outputs = train_and_export(policy, tokenizer, objective, LoopData(source, hooks=hooks), cfg, processes,
                                       resume, console, on_step)
    return OnlineRun(run_dir, result, outputs, processes.is_main)
