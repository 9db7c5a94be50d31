"""Online Merging Optimizers (Lu et al. 2024, "Online Merging Optimizers for Boosting Rewards and Mitigating Tax
in Alignment"): at every step, AdamW's update is merged with the task vector tau = theta_sft - theta_base (what
SFT taught the model the run starts from), steering preference training along the SFT direction to keep what
SFT learned (the "alignment tax").

With delta the AdamW update of one parameter tensor (its weight decay included), `alpha` the merging weight and
`keep` the fraction of entries kept (the paper's reserve rate p):

- OnDARE: tau is DARE-sparsified once (each entry kept with probability `keep`, divided by `keep`) and clipped
  to +-`clip`; each step delta is sparsified the same way with a fresh mask, and
      theta <- theta + alpha tau + (1 - alpha) delta'.
- OnTIES: tau (once) and delta (each step) keep their `keep` fraction of largest-magnitude entries; the
  elected sign is that of tau + delta' (0 counts as +); entries of either that disagree with it are dropped:
      theta <- theta + alpha tau[agree] + (1 - alpha) delta'[agree].

`rescale` restores each sparsified tensor's L1 norm (the authors' option; DARE's 1/keep then cancels). Masks
come from a generator seeded by (seed, step, tensor), so a resumed run draws the same masks, and tau is kept in
the optimizer state, so a resumed run needs the base model no more. The authors' k-step variant (merge every
k steps) is not here: k is 1. peft's pruning helpers (which `prefalign merge` uses) are not used here: their
random drop reads the global RNG, and their top-k keeps no entry of a tensor smaller than 1 / keep (a norm's
64 weights at keep 0.01 would never train); `top_magnitude` keeps at least one."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from prefalign.config.loading import ConfigError
from prefalign.config.schema import OnlineMergingConfig

TAU = "merge_tau"  # the per-parameter state key holding the sparsified task vector


def dare(x: torch.Tensor, keep: float, generator: torch.Generator) -> torch.Tensor:
    """Drop And REscale (Yu et al. 2024): each entry kept with probability `keep`, kept entries over `keep`."""
    if keep >= 1:
        return x.clone()
    mask = torch.rand(x.shape, generator=generator, device=generator.device) < keep
    return x * mask / keep


def top_magnitude(x: torch.Tensor, keep: float) -> torch.Tensor:
    """TIES' trim (Yadav et al. 2023): the `keep` fraction of largest-magnitude entries (at least one)."""
    k = max(1, math.ceil(keep * x.numel()))
    if k >= x.numel():
        return x.clone()
    flat = x.flatten()
    out = torch.zeros_like(flat)
    top = flat.abs().topk(k).indices
    out[top] = flat[top]
    return out.view_as(x)


def rescaled(sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """`sparse` scaled to the L1 norm of `dense`."""
    total = sparse.abs().sum()
    return sparse * (dense.abs().sum() / total) if total > 0 else sparse


def ties_merge(tau: torch.Tensor, delta: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha tau + (1 - alpha) delta over the entries whose sign agrees with that of tau + delta (0 as +)."""
    elected = torch.where(tau + delta >= 0, 1.0, -1.0).to(tau.dtype)
    return alpha * tau * (tau.sign() == elected) + (1 - alpha) * delta * (delta.sign() == elected)


class OnlineMergingAdamW(torch.optim.AdamW):
    """AdamW whose every update is merged with a task vector (see the module docstring). `base_params` gives
    the base model's tensor for a parameter name (None where the base has none: its tau is 0); it is called
    only on a run's first step, when tau = (the parameter now) - (the base's), and never after a resume."""

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], merging: OnlineMergingConfig, seed: int,
                 base_params: Callable[[], dict[str, torch.Tensor]], **adamw: object) -> None:
        super().__init__([p for _, p in named_params], **adamw)
        self.merging = merging
        self.seed = seed
        self.names = {id(p): name for name, p in named_params}
        self.index = {id(p): i for i, (_, p) in enumerate(named_params)}
        self._base_params = base_params

    def _generator(self, step: int, p: torch.Tensor) -> torch.Generator:
        # one stream per (seed, step, tensor), on the tensor's device: a resumed run draws the masks an
        # uninterrupted one draws
        return torch.Generator(device=p.device).manual_seed((self.seed * 1_000_003 + step) * 100_003 + self.index[id(p)])

    def _sparsify(self, x: torch.Tensor, step: int, p: torch.Tensor) -> torch.Tensor:
        m = self.merging
        out = dare(x, m.keep, self._generator(step, p)) if m.method == "dare" else top_magnitude(x, m.keep)
        return rescaled(out, x) if m.rescale else out

    def _init_tau(self, params: list[torch.Tensor], before: list[torch.Tensor]) -> None:
        """tau = theta_sft - theta_base, on a tensor's first update (before it, the tensor is still theta_sft)."""
        base = self._base_params()
        if not any(self.names[id(p)] in base for p in params):
            raise ConfigError("trainer.online_merging.base: the base model has none of the trained parameters "
                              f"(e.g. {self.names[id(params[0])]}); online merging needs full fine-tuning of a model "
                              "of the base's architecture (LoRA and IA3 train adapters the base has none of)")
        for p, start in zip(params, before):
            ref = base.get(self.names[id(p)])
            if ref is not None and ref.shape != p.shape:
                raise ConfigError(f"trainer.online_merging.base: {self.names[id(p)]} has shape {tuple(ref.shape)} "
                                  f"in the base model and {tuple(p.shape)} in the policy")
            tau = self._sparsify(start - ref.to(start) if ref is not None else torch.zeros_like(start), -1, p)
            self.state[p][TAU] = tau.clamp(-self.merging.clip, self.merging.clip) if self.merging.method == "dare" \
                else tau

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """AdamW's step, then each updated tensor set to its value before plus the merged update. A group at
        learning rate 0 changes nothing: torch.distributed.checkpoint steps once at lr 0 to create the state
        it then loads a checkpoint into, and that must not add alpha tau to the resumed weights."""
        params = [p for group in self.param_groups if float(group["lr"]) != 0 for p in group["params"]
                  if p.grad is not None]
        before = [p.detach().clone() for p in params]
        loss = super().step(closure)
        fresh = [(p, start) for p, start in zip(params, before) if TAU not in self.state[p]]
        if fresh:  # AdamW creates a tensor's state on its first update, so tau can only be added after it
            self._init_tau(*map(list, zip(*fresh)))
        alpha = self.merging.alpha
        for p, start in zip(params, before):
            state = self.state[p]
            delta = self._sparsify(p - start, int(state["step"]), p)
            tau = state[TAU]
            merged = ties_merge(tau, delta, alpha) if self.merging.method == "ties" else alpha * tau + (1 - alpha) * delta
            p.copy_(start + merged)
        return loss


def base_model_params(base: str) -> Callable[[], dict[str, torch.Tensor]]:
    """A loader of the base model's tensors by parameter name (safetensors only, no remote code)."""

    def load() -> dict[str, torch.Tensor]:
        from transformers import AutoModelForCausalLM

        from prefalign.models.loading import resolve_path
        from prefalign.models.pretrained import load_pretrained_model

        model = load_pretrained_model(AutoModelForCausalLM, resolve_path(base), dtype=torch.float32)
        return {name: t.detach() for name, t in model.state_dict().items()}

    return load
