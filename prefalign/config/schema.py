"""The configuration schema. Every YAML key is a field here; unknown keys are errors."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    # trainer.lr=.inf or a .nan weight would train for nothing and export NaN weights: refused here.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LoraSettings(Strict):
    """A LoRA adapter through `peft`; the reference is then the same model with the adapter disabled.

    use_dora: DoRA (Liu et al. 2024), the update split into a magnitude and a direction. use_rslora: rank-
    stabilised LoRA (Kalajdzievski 2023), scaling alpha / sqrt(r) instead of alpha / r."""

    r: int = Field(8, gt=0)
    alpha: float = 16.0
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"
    use_dora: bool = False
    use_rslora: bool = False


class QuantizationSettings(Strict):
    """QLoRA (Dettmers et al. 2023): the base loaded in 4 bits through bitsandbytes (NF4, double quantisation,
    bf16 compute by default), frozen, with a LoRA adapter trained on top; CUDA only."""

    bits: Literal[4] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = Field(True, description="quantise the quantisation constants too (0.37 bits/parameter saved)")
    compute_dtype: Literal["bfloat16", "float32"] = "bfloat16"


class IA3Settings(Strict):
    """IA3 through `peft` (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper
    than In-Context Learning"): learned vectors that rescale attention keys and values and the feed-forward
    activations (0.2% of the toy model's parameters). Module names default to peft's for the architecture;
    `feedforward_modules` must be a subset of `target_modules`."""

    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None


class ModelConfig(Strict):
    """The policy. `name_or_path` is a hub id, a local folder, or `toy` for the bundled toy base."""

    name_or_path: str = "toy"
    revision: str | None = None
    dtype: Literal["float32", "bfloat16"] = "float32"
    attn_implementation: str | None = Field(None, description="sdpa, eager, flash_attention_2, ...")
    trust_remote_code: bool = Field(False, description="run the model folder's own Python (auto_map); only for "
                                    "folders you trust")
    allow_pickle: bool = Field(False, description="load pickle weights (pytorch_model.bin) when a folder has no "
                               "safetensors; unpickling can run code")
    gradient_checkpointing: bool = False
    disable_dropout: bool = Field(True, description="set every dropout probability to 0, as the field does for "
                                  "preference and reward training (TRL's default); false keeps the model's own")
    lora: LoraSettings | None = None
    ia3: IA3Settings | None = None
    quantization: QuantizationSettings | None = Field(None, description="QLoRA: load the base in 4 bits (CUDA, "
                                                      "bitsandbytes: pip install 'prefalign[qlora]'); needs model.lora")

    @model_validator(mode="after")
    def _one_adapter(self) -> ModelConfig:
        if self.lora is not None and self.ia3 is not None:
            raise ValueError("model.lora and model.ia3 are both set; a policy takes one adapter")
        if self.quantization is not None and self.lora is None:
            raise ValueError("model.quantization: a 4-bit base is frozen, so only an adapter trains (QLoRA); "
                             "set model.lora too")
        return self

    @property
    def adapter(self) -> LoraSettings | IA3Settings | None:
        """The policy's adapter (LoRA or IA3), or None for full fine-tuning."""
        return self.lora or self.ia3


class ReferenceConfig(Strict):
    """Where reference log-probs come from.

    auto: `adapter` when LoRA is on, else `copy`. copy: a frozen copy of the policy (or of `name_or_path`).
    adapter: the policy with its adapter disabled. precomputed: computed once before training and stored
    with the examples, so no reference model stays in memory; with `cache` (default) the table is kept on
    disk under `cache_dir` (default $PREFALIGN_CACHE or ~/.cache/prefalign) and reused by any later run with
    the same reference and token ids. none: for reference-free losses.
    soup (SALSA, Chegini et al. 2024): the reference is the weight average of these models (two SFT models
    fine-tuned from one base, typically), sum_i w_i theta_i with `soup_weights` (default 1/M each); kind copy
    or precomputed, instead of name_or_path.
    """

    kind: Literal["auto", "copy", "adapter", "precomputed", "none"] = "auto"
    name_or_path: str | None = None
    soup: list[str] = Field(default_factory=list, description="models whose weight average is the reference")
    soup_weights: list[float] | None = Field(None, description="a weight per soup model; default 1/M each")
    cache: bool = True
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _soup(self) -> ReferenceConfig:
        if not self.soup:
            if self.soup_weights is not None:
                raise ValueError("reference.soup_weights needs reference.soup")
            return self
        if len(self.soup) < 2:
            raise ValueError("reference.soup: a soup averages at least two models")
        if self.name_or_path:
            raise ValueError("reference.soup and reference.name_or_path both name the reference; keep one")
        if self.kind in ("adapter", "none"):
            raise ValueError(f"reference.kind={self.kind} cannot use reference.soup; use copy or precomputed")
        if self.soup_weights is not None and len(self.soup_weights) != len(self.soup):
            raise ValueError(f"reference.soup_weights: {len(self.soup_weights)} weights for {len(self.soup)} models")
        return self


class PairRule(Strict):
    """How rated completions (UltraFeedback style) become pairs."""

    rule: Literal["best_vs_worst", "best_vs_random", "all_pairs"] = "best_vs_worst"
    min_gap: float = Field(0.0, ge=0.0, description="all_pairs: keep pairs whose score gap is at least this")
    score_key: str | None = Field(None, description="which score of a multi-score completion; mean if unset")


class DataConfig(Strict):
    train: str = Field("toy", description="file (jsonl/json/parquet/csv), save_to_disk folder, hub name, or toy")
    eval: str | None = None
    eval_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    split: str = "train"
    format: Literal["auto", "standard", "conversational", "implicit", "rated", "ranked", "unpaired",
                    "joint", "triple", "step", "completion", "messages"] = "auto"
    on_bad_row: Literal["error", "skip"] = "error"
    max_length: int = Field(512, gt=1)
    max_prompt_length: int | None = Field(None, gt=0)
    too_long: Literal["truncate", "reject"] = "truncate"
    pairs: PairRule = PairRule()
    limit: int | None = Field(None, gt=0)


class LossTerm(BaseModel):
    """One term of the training loss: a registered loss `name`, its `weight`, and the loss's own parameters.

    The parameters are checked against the named loss's own schema when the loss is built.
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str
    weight: float = 1.0

    def params(self) -> dict:
        return dict(self.model_extra or {})


class OnlineMergingConfig(Strict):
    """Online Merging Optimizers (Lu et al. 2024): AdamW's update merged at every step with the task vector
    theta_sft - theta_base (training/online_merging.py has the formulas). `base` is the model the run's starting
    (SFT) model was fine-tuned from. Defaults are the authors' DPO script (OnDARE, alpha 1e-7, keep 0.01)."""

    base: str = Field(description="the pretrained model the starting model was fine-tuned from (folder or hub id)")
    method: Literal["dare", "ties"] = "dare"
    alpha: float = Field(1e-7, ge=0, le=1, description="weight of the task vector in each merged update")
    keep: float = Field(0.01, gt=0, le=1, description="fraction of entries kept when sparsifying (reserve rate)")
    rescale: bool = Field(False, description="restore each sparsified tensor's L1 norm")
    clip: float = Field(1.0, gt=0, description="OnDARE: the task vector's entries clipped to +-clip")


class TrainerConfig(Strict):
    output_dir: str = "runs/train"
    seed: int = 0
    epochs: int = Field(1, gt=0)
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs when set")
    batch_size: int = Field(8, gt=0, description="examples per micro-batch in one process; batch_size x grad_accum "
                                                 "examples make an optimizer step over all processes")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step (in one process)")
    micro_batch_size: int | None = Field(None, gt=0, description="examples per forward pass in each process; "
                                         "only sets memory (default batch_size)")
    lr: float = Field(5e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    eval_every: int = Field(0, ge=0, description="steps between evaluations; 0: only at the end")
    eval_batch_size: int = Field(16, gt=0)
    log_every: int = Field(1, gt=0)
    save_every: int = Field(500, ge=0, description="steps between checkpoints (and one at the last step), so that "
                            "--resume after a crash has one to start from; 0: none")
    keep_last: int = Field(2, gt=0)
    max_bad_steps: int = Field(5, gt=0, description="stop after this many non-finite steps in a row")
    max_weight_growth: float | None = Field(10.0, gt=1, description="a step that multiplies the trained weights' "
                                            "norm by more than this is treated like one that leaves non-finite "
                                            "weights (stopped or undone); null turns the check off")
    on_nonfinite_update: Literal["stop", "undo"] = Field(
        "stop", description="a step whose updated weights are not finite: stop the run before anything is saved, "
        "or undo the step from a copy taken before each step (memory: the trained parameters and their optimizer "
        "state once more) and count it as skipped")
    online_merging: OnlineMergingConfig | None = Field(None, description="merge each update with the SFT task "
                                                       "vector (Online Merging Optimizers); full fine-tuning only")
    sinks: list[Literal["jsonl", "tensorboard", "wandb"]] = Field(["jsonl"], description="metrics.jsonl is always written")
    wandb_project: str = "prefalign"
    progress: bool = True


class ScheduleConfig(Strict):
    """Schedules that change the reference model or the data order during training.

    TR-DPO (Gorbatovski et al. 2024): reference_update soft (ref <- mix * policy + (1 - mix) * ref) or hard
    (ref <- policy) every `update_every` steps. sDPO (Kim et al. 2024): stages=chunks, the data trained chunk
    after chunk, the reference becoming the policy at the end of each. Curry-DPO (Pattnaik et al. 2024):
    stages=curriculum, several pairs per prompt (rated data with data.pairs.rule=all_pairs) ordered from the
    largest score gap (easiest) to the smallest, one pair per prompt and stage, the reference reset likewise.
    Selective DPO (Gao et al. 2025): stages=by_column, the pairs sorted by a numeric column, smallest first
    (the `validation_loss` that `prefalign data select --selector selective_dpo` writes: easy to hard), cut
    into num_chunks stages; set reset_reference_per_stage: false to keep one reference as the paper does."""

    reference_update: Literal["none", "soft", "hard"] = "none"
    update_every: int = Field(64, gt=0)
    mix: float = Field(0.6, gt=0, le=1)
    stages: Literal["none", "chunks", "curriculum", "by_column"] = "none"
    num_chunks: int = Field(2, ge=1, description="stages for stages=chunks and stages=by_column")
    stage_column: str | None = Field(None, description="stages=by_column: the numeric column to order by, ascending")
    reset_reference_per_stage: bool = True

    @model_validator(mode="after")
    def _column_with_by_column(self) -> ScheduleConfig:
        if (self.stages == "by_column") != (self.stage_column is not None):
            raise ValueError("schedule.stages: by_column and schedule.stage_column go together")
        return self


class EngineConfig(Strict):
    """How sequences reach the model. `packed` (default): each prompt once with its completions after it
    (prefix sharing), several examples per row (padding-free packing, `pack_tokens` per row; default the
    longest example of the batch), and the LM head only on positions that predict completion tokens, in
    checkpointed chunks of `logp_chunk`; per-token values of token-level losses (TDPO's KL, SparsePO, LD-DPO,
    WPO) are computed chunk by chunk too. Models that post-process their logits (soft-capping) use the padded
    layout for those losses. Gradient checkpointing is `model.gradient_checkpointing`.

    `autocast: bf16` is mixed precision (fp32 master weights, bf16 matmuls) on CPU and GPU; `model.dtype:
    bfloat16` instead keeps the weights themselves in bf16. Both are off by default: bf16 changes the numbers,
    and on CPUs without bf16 units it is slower. `compile` is off by default because compiling costs minutes
    on a first run and pays only on long ones."""

    packed: bool = True
    pack_tokens: int | None = Field(None, gt=0)
    logp_chunk: int = Field(1024, gt=0, description="completion positions per LM-head chunk (packed layout)")
    autocast: Literal["off", "bf16"] = Field(
        "off", description="bf16: matmuls in bfloat16 under torch.autocast, weights and optimizer in model.dtype")
    compile: bool = Field(False, description="torch.compile the decoder (dynamic shapes); the first steps compile")
    threads: int | None = Field(None, gt=0, description="CPU threads torch uses in each process; default: torch's "
                                "own choice, which respects OMP_NUM_THREADS (one per core). Lower it on a busy machine")


class DistributedConfig(Strict):
    """Several processes, launched with `torchrun` or `accelerate launch` (docs/scaling.md). The same config is
    the same run at any world size: a step's batch_size x grad_accum examples are split across the ranks.

    auto: DDP when several processes are launched (FSDP2 when an accelerate FSDP config launched them).
    ddp: every rank holds the whole model, gradients are averaged. fsdp2: parameters, gradients and optimizer
    state sharded per transformer block (torch's fully_shard); the reference is sharded the same way."""

    strategy: Literal["auto", "ddp", "fsdp2"] = "auto"
    world_size: int | None = Field(None, gt=0, description="a record, written by the run: the processes it ran "
                                   "with (the launcher decides; a checkpoint resumes at any world size)")


class TrainConfig(Strict):
    model: ModelConfig = ModelConfig()
    reference: ReferenceConfig = ReferenceConfig()
    data: DataConfig = DataConfig()
    loss: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="dpo", beta=0.1)], min_length=1)
    trainer: TrainerConfig = TrainerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    engine: EngineConfig = EngineConfig()
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="after")
    def _online_merging_trains_the_whole_model(self) -> TrainConfig:
        adapter = "lora" if self.model.lora else "ia3" if self.model.ia3 else None
        if self.trainer.online_merging is not None and adapter:
            raise ValueError(f"trainer.online_merging merges updates of the full model with the SFT task vector; "
                             f"model.{adapter} trains an adapter instead: remove one of them")
        return self

    @field_validator("loss", mode="before")
    @classmethod
    def _one_term_is_a_list(cls, value: object) -> object:
        if isinstance(value, (dict, str)):
            value = [value]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


class PriorConstraintConfig(Strict):
    """PCRM (Zhou et al. 2024, prefalign/losses/pcrm.py): -log s(d) - log s(delta* - d) for d = r_w - r_l, with
    delta* = beta1 / (sim + beta2) + beta3 from the pair's length ratio or a similarity column in [0, 1]
    (`prefalign data similarity` writes one). The defaults are the paper's reward model with the length ratio."""

    similarity: Literal["length_ratio", "column"] = "length_ratio"
    column: str = Field("similarity", description="similarity: column, the numeric column to read")
    beta1: float = Field(20.0, gt=0)
    beta2: float = Field(0.001, gt=0)
    beta3: float = -15.0


class RewardConfig(Strict):
    """The reward model: its backbone, head and loss (see prefalign/rewards).

    head scalar: Bradley-Terry, one output per `objectives` column (each column holds +1 where the chosen
    response is better on that objective, -1 where worse, 0 for no signal); without objectives one reward from
    the chosen/rejected order. gpm: the general preference model, `dim`-dimensional embeddings (even). pal:
    ideal points, `dim` features, `prototypes` mixture components, one user (or group) per `user_column`."""

    backbone: Literal["auto", "decoder", "encoder"] = Field(
        "auto", description="decoder: a causal LM's body + linear head on the last token; encoder: "
                            "AutoModelForSequenceClassification on (prompt, response) text pairs")
    head: Literal["scalar", "gpm", "pal"] = "scalar"
    objectives: list[str] | None = None
    margin_column: str | None = Field(None, description="numeric column m: -log s(r_w - r_l - m)")
    center: float = Field(0.0, ge=0, description="reward centring: + center * (r_w + r_l)^2")
    dim: int = Field(8, gt=1, description="gpm: embedding size (even); pal: feature size")
    prototypes: int = Field(2, gt=0, description="pal: mixture components")
    user_column: str = Field("user", description="pal: the column naming each pair's user or group")
    segment_ids: bool = Field(True, description="encoder: feed the response as segment 1 (token type ids), as "
                                                "the tokenizer encodes a text pair; false: all segment 0")
    prior_constraint: PriorConstraintConfig | None = Field(None, description="PCRM: bound each pair's margin by a "
                                                                           "prior from the two responses' similarity")

    @model_validator(mode="after")
    def _gpm_dim_is_even(self) -> RewardConfig:
        if self.head == "gpm" and self.dim % 2:
            raise ValueError(f"reward.dim must be even for the gpm head (2-d blocks), got {self.dim}")
        return self

    @model_validator(mode="after")
    def _prior_constraint_on_one_scalar_reward(self) -> RewardConfig:
        if self.prior_constraint and (self.head != "scalar" or self.objectives or self.margin_column):
            raise ValueError("reward.prior_constraint bounds the margin of one scalar reward: it does not combine "
                             "with reward.objectives, reward.margin_column or the gpm/pal heads")
        return self


class RewardTrainConfig(Strict):
    """`prefalign rm train`: model.name_or_path is the backbone; trainer, data and engine as for `train`."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    reward: RewardConfig = RewardConfig()
    trainer: TrainerConfig = TrainerConfig(output_dir="runs/reward", lr=1e-4, batch_size=16)
    engine: EngineConfig = EngineConfig()
    distributed: DistributedConfig = DistributedConfig()


class OnlineConfig(Strict):
    """Online preference optimisation (`prefalign online`): the policy samples, a scorer labels, the loss
    learns from pairs of the policy's own samples (prefalign/online/rollouts.py).

    A round every `generate_every` steps: the next prompts, `samples` completions each from the current
    policy (temperature only: no top-k/top-p, so samples are the policy's own distribution), scored by
    `scorer`, paired by `pairs`. trainer.batch_size x trainer.grad_accum pairs make a step."""

    prompts: str = Field("toy", description="toy (the toy training prompts), toy-arithmetic, or a file with a "
                                            "`prompt` field (jsonl/json/csv/parquet)")
    samples: int = Field(4, ge=2, description="completions sampled per prompt")
    generate_every: int = Field(1, gt=0, description="optimizer steps trained on each round's pairs")
    pairs: Literal["best_vs_worst", "all_pairs", "rso"] = "best_vs_worst"
    scorer: str = Field("gold", description="gold, noisy_gold, verifier, self_consistency, rm:FOLDER (a saved "
                                            "reward model) or maxmin:FOLDER (groups from prefalign rm groups)")
    min_margin: float = Field(0.0, ge=0, description="skip pairs whose score margin is below this (ScPO's vote "
                                                     "margin: a fraction of online.samples)")
    select: Literal["none", "dual_margin"] = Field("none", description="dual_margin: sample 1/select_keep times "
                                                   "the pairs a round needs, keep those the scorer's and the "
                                                   "policy's implicit margins both call clear (Less is More)")
    select_keep: float = Field(0.5, gt=0, le=1, description="select: the fraction of a round's pairs kept")
    rso_beta: float = Field(0.5, gt=0, description="rso: temperature of the reward tilt pi(y|x) exp(r / beta)")
    rso_accepted: int = Field(2, ge=2, description="rso: samples accepted per prompt, paired two by two")
    noise: float = Field(0.5, ge=0, description="noisy_gold: the annotator's noise (std of the score)")
    max_new_tokens: int = Field(48, gt=0)
    temperature: float = Field(1.0, gt=0)
    generation_batch_size: int = Field(64, gt=0, description="sequences per generate call")
    draft: str | None = Field(None, description="a small model sharing the policy's tokenizer: rollouts are "
                              "sampled speculatively (the policy's distribution, fewer policy passes)")
    draft_tokens: int = Field(4, ge=1, description="tokens the draft proposes per policy forward pass")

    @model_validator(mode="after")
    def _rso_within_samples(self) -> OnlineConfig:
        if self.pairs == "rso" and self.rso_accepted > self.samples:
            raise ValueError(f"online.rso_accepted ({self.rso_accepted}) exceeds online.samples ({self.samples})")
        return self


class RewardTermConfig(Strict):
    """One term of the RL reward, summed with its weight: a scorer (gold, noisy_gold, verifier, rm:FOLDER,
    maxmin:FOLDER), `format` (1 when the response states a number, for arithmetic), `length` (completion tokens /
    max_new_tokens) or `overlong` (DAPO's soft penalty: 0 up to max_new_tokens - overlong_buffer tokens, then
    falling linearly to -1 at max_new_tokens)."""

    name: str = "verifier"
    weight: float = 1.0


class KLConfig(Strict):
    """KL to the reference (prefalign/rl/kl.py has the formulas). `target` set: the adaptive controller moves
    `coef` towards that KL (per sequence, summed over tokens) over `horizon` sequences."""

    coef: float = Field(0.0, ge=0, description="beta; 0 with placement none")
    estimator: Literal["k1", "k2", "k3"] = "k3"
    placement: Literal["reward", "loss", "none"] = "loss"
    target: float | None = Field(None, gt=0)
    horizon: int = Field(10_000, gt=0)


class CostConfig(Strict):
    """Constrained RLHF (prefalign/rl/constraints.py): a cost term scored like a reward term, kept below
    `threshold` on average by a Lagrange multiplier learned during training."""

    name: str = Field(description="a reward term's name, scored as the cost (e.g. length, or rm:FOLDER)")
    threshold: float
    multiplier_lr: float = Field(0.1, gt=0)
    multiplier_init: float = Field(0.0, ge=0)
    normalise: bool = Field(True, description="learn from (r - lambda c) / (1 + lambda), as Safe RLHF")


class DPORewardConfig(Strict):
    """RTO (prefalign/rl/dense_reward.py): a DPO-trained model's token-wise implicit reward,
    beta (log pi_dpo - log pi_dpo_ref), added to every completion token's reward."""

    model: str = Field(description="the DPO-trained policy: model folder or run folder")
    reference: str | None = Field(None, description="the reference the DPO run trained against; default "
                                                    "model.name_or_path (the policy RL starts from)")
    beta: float = Field(0.1, gt=0, description="the DPO run's beta, or another scale")
    placement: Literal["token", "sequence"] = Field(
        "token", description="token: each token's r_t on that token (RTO); sequence: their sum on the last "
        "token, DPO's sentence-level implicit reward (the ablation RTO compares with)")


class ElasticResetConfig(Strict):
    """Elastic Reset (prefalign/rl/elastic_reset.py): the policy's moving average with `decay`, and every
    `every` steps the policy reset to it and it to the initial model."""

    every: int = Field(gt=0)
    decay: float = Field(0.99, gt=0, lt=1)


class RLConfig(Strict):
    """Reinforcement learning (`prefalign rl`, prefalign/rl/): every rollout the policy samples `group_size`
    completions of each of the next trainer.batch_size x trainer.grad_accum x `minibatches` prompts, the
    reward terms score them, `advantage` turns rewards into advantages, and the policy losses of `loss` learn
    from them for `epochs` passes of `minibatches` optimizer steps each (old log-probs taken once per rollout).
    trainer.batch_size counts prompts (groups of `group_size` samples)."""

    prompts: str = Field("toy-arithmetic", description="toy, toy-arithmetic, or a file with a `prompt` field")
    group_size: int = Field(8, ge=1, description="samples per prompt (G)")
    advantage: str = Field("grpo", description="grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, gae")
    aggregation: Literal["token_mean", "sequence_mean", "constant"] = Field(
        "sequence_mean", description="token_mean: over all tokens of the step (DAPO); sequence_mean: each "
        "sequence's token mean, averaged (GRPO); constant: token sums / (sequences x normaliser) (Dr. GRPO)")
    normaliser: int | None = Field(None, gt=0, description="aggregation constant: default max_new_tokens")
    rewards: list[RewardTermConfig] = Field(default_factory=lambda: [RewardTermConfig()])
    noise: float = Field(0.5, ge=0, description="noisy_gold: the annotator's noise")
    overlong_buffer: int = Field(8, ge=1, description="the overlong reward term's soft band, in tokens")
    kl: KLConfig = KLConfig()
    cost: CostConfig | None = None
    dpo_reward: DPORewardConfig | None = None
    demonstrations: str | None = Field(None, description="SRFT, GRAO: a demonstration joins every group: toy (the "
                                       "toy world's ideal answer) or a file with prompt and completion fields")
    elastic_reset: ElasticResetConfig | None = None
    epochs: int = Field(1, gt=0, description="passes over each rollout (PPO epochs)")
    minibatches: int = Field(1, gt=0, description="optimizer steps per pass over a rollout")
    dynamic_sampling: bool = Field(False, description="DAPO: drop groups whose rewards are all equal and sample "
                                                      "more prompts to fill the rollout")
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    max_new_tokens: int = Field(24, gt=0)
    temperature: float = Field(1.0, gt=0, description="sampling temperature; the policy's and the reference's "
                                                      "log-probs are taken at it too, so ratios are the sampler's")
    generation_batch_size: int = Field(128, gt=0)
    draft: str | None = Field(None, description="a small model sharing the policy's tokenizer: rollouts are "
                              "sampled speculatively (the policy's distribution, fewer policy passes)")
    draft_tokens: int = Field(4, ge=1, description="tokens the draft proposes per policy forward pass")


class RLTrainConfig(TrainConfig):
    """`prefalign rl`: the policy, reference, policy losses, trainer and engine as for `train`, plus `rl`."""

    rl: RLConfig = RLConfig()
    loss: list[LossTerm] = Field(default_factory=lambda: [LossTerm(name="ppo_clip")], min_length=1)
    trainer: TrainerConfig = TrainerConfig(output_dir="runs/rl", max_steps=100, lr=1e-4, batch_size=8)


class OnlineTrainConfig(TrainConfig):
    """`prefalign online`: the policy, reference, losses, trainer and engine as for `train`, plus `online`."""

    online: OnlineConfig = OnlineConfig()
    trainer: TrainerConfig = TrainerConfig(output_dir="runs/online", max_steps=100, lr=1e-4, batch_size=16)


class ConditionConfig(Strict):
    """Conditional training (Korbak et al. 2023, "Pretraining Language Models with Human Preferences"): each
    completion's prompt ends with a control token, `good_token` where the completion's score is at least
    `threshold` and `bad_token` below it; generation then asks for the good one by ending the prompt with it.
    Both tokens join the tokenizer as special tokens (new embedding rows)."""

    threshold: float | None = Field(None, description="scores at or above are good; default: the median "
                                    "score of the training completions")
    good_token: str = "<|good|>"
    bad_token: str = "<|bad|>"


class SFTTrainConfig(Strict):
    """`prefalign sft`: supervised fine-tuning on prompt/completion or messages data, or on the preferred
    completions of preference data; with `condition`, on every completion behind a control token."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    trainer: TrainerConfig = TrainerConfig(output_dir="runs/sft", lr=1e-4, batch_size=16)
    condition: ConditionConfig | None = None
    engine: EngineConfig = EngineConfig()
    distributed: DistributedConfig = DistributedConfig()


class BudgetConfig(Strict):
    """`prefalign budget` (Raghavendra et al. 2025, "Balancing the Budget"): `labels` annotations split between
    SFT demonstrations (the first `sft_fraction` of them, rows of `sft.data.train`) and preference pairs
    (the rest, rows of `preference.data.train`); SFT runs first from `sft.model`, then preference optimisation
    from the SFT model, whose start is also its reference. A fraction of 0 skips SFT, 1 skips the second stage.
    Held-out rows (data.eval_fraction) come out of each stage's share."""

    labels: int = Field(1000, gt=0, description="annotations in all: demonstrations plus preference rows")
    sft_fraction: float = Field(0.1, ge=0, le=1, description="the share spent on SFT demonstrations")
    output_dir: str = Field("runs/budget", description="sft/ and preference/ run folders go here")
    sft: SFTTrainConfig = SFTTrainConfig()
    preference: TrainConfig = TrainConfig()


class DPATrainConfig(Strict):
    """`prefalign dpa` (Directional Preference Alignment, Wang et al. 2024; prefalign/pluralistic/directional.py):
    `rounds` of preference-conditioned rejection-sampling fine-tuning over two objectives. Each round takes the
    next `prompts_per_round` prompts, gives each a random direction (its angle in 10-degree steps, written into
    the prompt), samples `samples` completions and fine-tunes `trainer.max_steps` steps on the best for that
    direction. Ask the result with "<|system|> K prompt" for the direction at 10 K degrees from the first
    objective."""

    model: ModelConfig = ModelConfig()
    prompts: str = Field("toy", description="toy (the toy training prompts) or a file with a `prompt` field")
    objectives: list[str] = Field(["gold", "brevity"], min_length=2, max_length=2,
                                  description="two scorers, as online.scorer names them (gold, brevity, "
                                              "noisy_gold, verifier, rm:FOLDER); the first is at 0 degrees")
    rounds: int = Field(2, gt=0)
    samples: int = Field(4, ge=2, description="completions per prompt, the best kept")
    prompts_per_round: int = Field(1000, gt=0)
    max_new_tokens: int = Field(48, gt=0)
    max_length: int = Field(128, gt=0, description="tokens of prompt and completion in fine-tuning")
    trainer: TrainerConfig = TrainerConfig(output_dir="runs/dpa", max_steps=300, batch_size=32, lr=1e-3,
                                           warmup_steps=20)


class DecodeConfig(Strict):
    """`prefalign decode`: a frozen model steered at inference by rewards, values or self-consistency. Every
    key is also a command-line option (n_prompts is --n-prompts); options given there win over the file.
    Running a folder's own code (--trust-remote-code) and unpickling (--allow-pickle) are command-line only."""

    strategy: str = Field("sample", description="a registered strategy (prefalign.decoding.strategies)")
    model: str = Field("toy", description="the frozen policy: model folder, run folder, hub id or toy")
    prompts: str = Field("toy", description="toy (held-out toy prompts) or a file with a prompt field")
    n_prompts: int = Field(20, ge=1)
    scorer: str | None = Field(None, description="text scorer: gold | rm:FOLDER")
    reward_model: str | None = Field(None, description="decoder reward model sharing the policy's tokenizer (ARGS)")
    value: list[str] = Field(default_factory=list, description="FOLDER[=WEIGHT] value models (CD, VAS)")
    baseline: str | None = Field(None, description="Transfer Q*: the baseline model for rollouts")
    draft: str | None = Field(None, description="a small model sharing the policy's tokenizer: plain-sampling "
                              "strategies then sample speculatively (the same distribution, fewer policy passes)")
    draft_tokens: int = Field(4, ge=1, description="tokens the draft proposes per policy forward pass")
    weights: list[float] | None = Field(None, description="a weight per objective of a multi-objective reward model")
    k: int = Field(10, ge=1, description="candidates (ARGS, CD, VAS, TQ*), samples (best-of-N, consistency)")
    weight: float = Field(1.0, description="ARGS's w, Transfer Q*'s alpha")
    block: int = Field(8, ge=1)
    horizon: int = Field(16, ge=1)
    guidance_scale: float = 1.5
    negative_prompt: str = ""
    threshold: float = 1.0
    greedy: bool = False
    max_new_tokens: int = Field(48, ge=1)
    seed: int = 0
    out: str = Field("runs/decode.jsonl", description="JSONL of prompt, completion, reward")
