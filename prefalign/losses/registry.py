"""Losses registered by name, each with the schema of its parameters and what it needs.

A loss is `fn(logps: PairLogps, **params) -> loss [B]` or `-> (loss [B], metrics {name: [B] or scalar})`.
It declares what the training loop must compute for it (`needs`), which data columns it reads (`columns`),
and, for the few that keep running statistics (BCO's reward baseline, beta-DPO's gap moments), a `state`
factory; such a loss also takes `state` (a dict of floats, saved in checkpoints) and `update` (False while
evaluating). A loss with trainable parts of its own (SparsePO's learned mask) declares a `module` factory,
`(params, policy) -> nn.Module`; the loop trains and checkpoints that module with the policy, and the loss
takes it as `module`. A loss in which an example's value depends on the other examples of the batch (a
batch statistic, a sort) declares `couples_batch`: it then sees the whole step at once, whatever the
micro-batches and processes (training/coupled.py); where that depends on the parameters (an NLL term
normalised by the step's token count), `couples_batch` is a function of them."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from prefalign.config.loading import ConfigError
from prefalign.config.schema import LossTerm
from prefalign.losses.inputs import ListLogps, PairLogps, PolicyLogps, UnpairedLogps

# What a loss can ask the training loop for.
NEEDS = {
    "reference": "summed reference log-probs",
    "token_logps": "the policy's per-token log-probs",
    "reference_token_logps": "the reference's per-token log-probs",
    "wpo": "WPO's per-sequence probability statistic (needs the full vocabulary distribution)",
    "token_kl": "per-token KL(pi_ref || pi) along the completion (full vocabulary of both models)",
    "reference_hidden": "the reference's hidden states at every layer",
    "values": "a value head's estimates at every completion position (PPO's critic)",
    "kl_baseline": "KTO's KL reference point: policy and reference on mismatched (prompt, completion) rows",
    "demonstrations": "a demonstration in every rollout group (rl.demonstrations) and the policy's entropy",
}
# Needs that are answered by running the reference model on the batch.
REFERENCE_NEEDS = frozenset({"reference", "reference_token_logps", "token_kl", "reference_hidden"})
# Needs that only the padded layout answers (per-token values).
TOKEN_LEVEL_NEEDS = frozenset({"token_logps", "reference_token_logps", "wpo", "token_kl", "reference_hidden"})
# Needs that per-sequence (precomputed) reference log-probs cannot answer.
TOKEN_LEVEL_REFERENCE_NEEDS = REFERENCE_NEEDS - {"reference"}
LOSS_MODULES = ["dpo", "ipo", "hinge", "sft", "length", "f_divergence", "anchored", "discopop", "aot",
                "reference_free", "adaptive", "ranking", "kto", "token_level", "multi_objective", "triples",
                "policy_gradient", "scpo", "weighted_sft", "vpo", "discriminative", "pcrm"]
# What a loss consumes: pairs (PairLogps), ranked lists (ListLogps), labelled completions (UnpairedLogps), or
# the policy's own scored samples (PolicyLogps; the loss is per token [N, T], aggregated by the RL objective).
KINDS = ("pairwise", "ranking", "unpaired", "policy")


class LossParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # beta=.inf is a config error


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable
    params: type[LossParams]
    needs: frozenset[str]
    columns: Callable[[LossParams], list[str]] | None = None
    init_state: Callable[[], dict[str, float]] | None = None
    kind: str = "pairwise"
    module: Callable[[LossParams, torch.nn.Module], torch.nn.Module | None] | None = None
    # an example's loss depends on the other examples of the step (always, or for some parameters)
    couples_batch: bool | Callable[[LossParams], bool] = False

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()

    @property
    def needs_reference(self) -> bool:
        return bool(self.needs & REFERENCE_NEEDS)


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, params: type[LossParams] = LossParams, needs: tuple[str, ...] = ("reference",),
                  columns: Callable[[LossParams], list[str]] | None = None,
                  state: Callable[[], dict[str, float]] | None = None, kind: str = "pairwise",
                  module: Callable[[LossParams, torch.nn.Module], torch.nn.Module | None] | None = None,
                  couples_batch: bool | Callable[[LossParams], bool] = False) -> Callable:
    unknown = set(needs) - set(NEEDS)
    if unknown or kind not in KINDS:
        raise ValueError(f"loss {name}: unknown needs {unknown} or kind {kind!r}")

    def wrap(fn: Callable) -> Callable:
        LOSSES[name] = LossSpec(name, fn, params, frozenset(needs), columns, state, kind, module, couples_batch)
        return fn

    return wrap


@dataclass
class LossOutput:
    loss: torch.Tensor  # [B], already weighted
    metrics: dict[str, torch.Tensor]


@dataclass
class BoundLoss:
    """A loss term of the config: a registered loss with validated parameters, a weight, and its state."""

    spec: LossSpec
    params: LossParams
    weight: float
    state: dict[str, float] = field(default_factory=dict)
    module: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        if self.spec.init_state and not self.state:
            self.state = self.spec.init_state()

    def __call__(self, logps: PairLogps | ListLogps | UnpairedLogps | PolicyLogps, update: bool = True) -> LossOutput:
        kwargs = self.params.model_dump()
        if self.spec.init_state:
            kwargs |= {"state": self.state, "update": update}
        if self.spec.module:
            if self.module is not None:
                self.module.train(update)
            kwargs["module"] = self.module
        out = self.spec.fn(logps, **kwargs)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        return LossOutput(self.weight * loss, metrics)

    def build_module(self, policy: torch.nn.Module) -> torch.nn.Module | None:
        """Create the loss's own trainable module (if it has one) for this policy, on its device."""
        if self.spec.module and self.module is None:
            self.module = self.spec.module(self.params, policy)
            if self.module is not None:
                self.module.to(next(policy.parameters()).device)
        return self.module

    @property
    def couples_batch(self) -> bool:
        coupled = self.spec.couples_batch
        return coupled(self.params) if callable(coupled) else coupled

    @property
    def beta(self) -> float | None:
        return getattr(self.params, "beta", None)

    @property
    def columns(self) -> list[str]:
        return self.spec.columns(self.params) if self.spec.columns else []


def ensure_registered() -> None:
    for module in LOSS_MODULES:
        importlib.import_module(f"prefalign.losses.{module}")


def build_losses(terms: list[LossTerm]) -> list[BoundLoss]:
    """Validate the config's loss terms against the registry; errors name the term and suggest names."""
    ensure_registered()
    bound = []
    for i, term in enumerate(terms):
        if term.name not in LOSSES:
            close = difflib.get_close_matches(term.name, list(LOSSES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"loss.{i}.name: unknown loss {term.name!r}{hint} (known: {', '.join(sorted(LOSSES))})")
        spec = LOSSES[term.name]
        try:
            params = spec.params.model_validate(term.params())
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                if err["type"] == "extra_forbidden":
                    close = difflib.get_close_matches(key, list(spec.params.model_fields), n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    problems.append(f"loss.{i}.{key}: {term.name} has no parameter {key!r}{hint} "
                                    f"(parameters: {', '.join(spec.params.model_fields) or 'none'})")
                else:
                    problems.append(f"loss.{i}.{key}: {err['msg']}")
            raise ConfigError("\n".join(problems)) from None
        bound.append(BoundLoss(spec, params, term.weight))
    return bound


def combined_needs(losses: list[BoundLoss]) -> frozenset[str]:
    return frozenset().union(*(t.spec.needs for t in losses))


def loss_kind(losses: list[BoundLoss]) -> str:
    """The one kind of data all terms consume; terms of different kinds cannot be summed per example."""
    kinds = {t.spec.kind for t in losses}
    if len(kinds) != 1:
        raise ConfigError("loss terms consume different kinds of data: "
                          + ", ".join(f"{t.spec.name} ({t.spec.kind})" for t in losses))
    return kinds.pop()
