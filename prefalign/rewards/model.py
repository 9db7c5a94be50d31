"""Reward models: a pretrained backbone and a small head that reads one vector per (prompt, response).

decoder  a causal LM's body (AutoModel) and a linear head on the hidden state of the last real token, found
         from the attention mask, so left and right padding give the same reward; packed, prefix-shared
         batches (the prompt encoded once for all its responses) read the last token of each response.
encoder  AutoModelForSequenceClassification (BERT-like): the prompt and the response as a text pair, the
         response as segment 1 (token type ids) where the backbone has segments (spec.segment_ids).

The head has one output per objective (`scalar`, Bradley-Terry), 2k outputs embedding the response for the
general preference model (`gpm`), or a D-dimensional feature for the pluralistic ideal-point model (`pal`);
see rewards/gpm.py and rewards/pal.py for how those become preferences. Saved as a folder: the backbone
through save_pretrained (safetensors), the head in head.safetensors, and reward_config.json."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

from prefalign.atomic_files import write_text_atomic
from prefalign.data.collate import TokenBatch
from prefalign.data.packing import PackedBatch
from prefalign.models.logprobs import packed_inputs
from prefalign.models.pretrained import load_pretrained_files, load_pretrained_model
from prefalign.rewards.gpm import PreferenceScales
from prefalign.rewards.pal import IdealPoints


@dataclass
class RewardSpec:
    """What a reward model folder holds, besides the weights."""

    kind: str  # decoder | encoder
    head: str = "scalar"  # scalar | gpm | pal
    objectives: list[str] = field(default_factory=lambda: ["reward"])
    dim: int = 0  # gpm: embedding size (even); pal: feature size
    prototypes: int = 0  # pal
    users: list[str] = field(default_factory=list)  # pal: the users (or groups) seen in training
    max_length: int | None = None  # the training max length, the default for scoring (None: older folders)
    segment_ids: bool = False  # encoder: the response is fed as segment 1 (token type ids), as its tokenizer does

    @property
    def outputs(self) -> int:
        return len(self.objectives) if self.head == "scalar" else self.dim


def backbone_kind(name_or_path: str, trust_remote_code: bool = False) -> str:
    """decoder for causal LM families (Llama, Qwen2, GPT-NeoX...), encoder for masked-LM families (BERT,
    RoBERTa, MiniLM, DeBERTa...), which transformers also lists as causal LMs."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_MASKED_LM_MAPPING,
    )

    config = load_pretrained_files(AutoConfig, name_or_path, trust_remote_code=trust_remote_code)
    causal = type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and type(config) not in MODEL_FOR_MASKED_LM_MAPPING
    return "decoder" if causal else "encoder"


class RewardModel(torch.nn.Module):
    def __init__(self, spec: RewardSpec, backbone: torch.nn.Module, head: torch.nn.Module | None) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.head = head  # decoder: Linear(hidden, outputs); encoder: inside the classification model
        self.ideal_points = IdealPoints(spec.dim, spec.prototypes, len(spec.users)) if spec.head == "pal" else None
        self.scales = PreferenceScales(spec.dim // 2) if spec.head == "gpm" else None

    @property
    def config(self) -> object:
        return self.backbone.config

    def forward(self, tokens: TokenBatch | PackedBatch) -> torch.Tensor:
        """[sequences, outputs]: one row per (prompt, response) sequence of the batch."""
        if self.spec.kind == "encoder":
            types = {"token_type_ids": tokens.completion_mask} if self.spec.segment_ids else {}
            return self.backbone(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, **types).logits.float()
        if isinstance(tokens, PackedBatch):
            hidden = self.backbone(**packed_inputs(self.backbone, tokens)).last_hidden_state.flatten(0, 1)
            last = torch.full((tokens.num_sequences,), -1, dtype=torch.long, device=hidden.device)
            last = last.scatter_reduce(0, tokens.slot, tokens.token_at, reduce="amax")  # each response's last token
            return self.head(hidden[last]).float()
        hidden = self.backbone(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        positions = torch.arange(tokens.attention_mask.shape[1], device=hidden.device)
        last = (positions * tokens.attention_mask).argmax(-1)  # the last real token, whichever side is padded
        return self.head(hidden[torch.arange(len(last), device=hidden.device), last]).float()

    # -- saving and loading --------------------------------------------------------------------------------

    def parts(self) -> dict[str, torch.nn.Module]:
        """The modules saved next to the backbone."""
        named = {"head": self.head, "ideal_points": self.ideal_points, "scales": self.scales}
        return {k: v for k, v in named.items() if v is not None}

    def save(self, out: Path, pad_token_id: int | None = None) -> Path:
        """Write the folder; the spec file last, so a folder without it is an interrupted save. A scalar
        decoder's `backbone/` is written as the architecture's *ForSequenceClassification, so that
        `AutoModelForSequenceClassification.from_pretrained(out / "backbone")` loads it as TRL's are loaded."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        backbone = self.backbone.merge_and_unload() if hasattr(self.backbone, "merge_and_unload") else self.backbone
        if self.spec.kind == "decoder" and self.spec.head == "scalar":
            backbone = _as_sequence_classifier(backbone, self.head, pad_token_id) or backbone
        backbone.save_pretrained(out / "backbone", safe_serialization=True)
        extra = {f"{name}.{k}": v for name, module in self.parts().items() for k, v in module.state_dict().items()}
        if extra:
            save_file({k: v.detach().contiguous().cpu() for k, v in extra.items()}, str(out / ".tmp-head.safetensors"))
            (out / ".tmp-head.safetensors").replace(out / "head.safetensors")
        write_text_atomic(out / "reward_config.json", json.dumps(asdict(self.spec), indent=2))
        return out


def _as_sequence_classifier(body: torch.nn.Module, head: torch.nn.Linear,
                            pad_token_id: int | None) -> torch.nn.Module | None:
    """The body and head as transformers' sequence classifier of the same architecture (which scores the
    last non-pad token, as the reward model does), or None where the architecture has none. Its `score`
    layer has no bias, so its rewards are ours minus the head's bias: the same margins."""
    config = copy.deepcopy(body.config)
    config.num_labels = head.out_features
    config.pad_token_id = pad_token_id if pad_token_id is not None else config.pad_token_id
    try:
        classifier = AutoModelForSequenceClassification.from_config(config, dtype=head.weight.dtype)
    except ValueError:
        return None
    score = getattr(classifier, "score", None)
    inner = getattr(classifier, classifier.base_model_prefix, None)
    if score is None or inner is None or score.bias is not None:
        return None
    inner.load_state_dict(body.state_dict())
    with torch.no_grad():
        score.weight.copy_(head.weight)
    return classifier


def build_reward_model(name_or_path: str, spec: RewardSpec, dtype: torch.dtype = torch.float32,
                       trust_remote_code: bool = False, attn_implementation: str | None = None,
                       allow_pickle: bool = False) -> RewardModel:
    """A new reward model on a pretrained backbone (hub id or folder), the head freshly initialised."""
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code, "allow_pickle": allow_pickle}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if spec.kind == "encoder":
        backbone = load_pretrained_model(AutoModelForSequenceClassification, name_or_path, num_labels=spec.outputs,
                                         **kwargs)
        if getattr(backbone.config, "type_vocab_size", 0) < 2:  # RoBERTa-like: one segment embedding, or none
            spec = replace(spec, segment_ids=False)
        return RewardModel(spec, backbone, None)
    backbone = load_pretrained_model(AutoModel, name_or_path, **kwargs)
    head = torch.nn.Linear(backbone.config.hidden_size, spec.outputs, dtype=dtype)
    torch.nn.init.normal_(head.weight, std=1.0 / (backbone.config.hidden_size + 1) ** 0.5)
    torch.nn.init.zeros_(head.bias)
    return RewardModel(spec, backbone, head)


def load_reward_spec(folder: str | Path) -> RewardSpec:
    folder = Path(folder)
    if not (folder / "reward_config.json").exists():
        raise FileNotFoundError(f"{folder} is not a reward model folder (no reward_config.json)")
    return RewardSpec(**json.loads((folder / "reward_config.json").read_text()))


def load_reward_model(folder: str | Path, trust_remote_code: bool = False) -> RewardModel:
    """A reward model saved by RewardModel.save (safetensors only)."""
    folder = Path(folder)
    spec = load_reward_spec(folder)
    model = build_reward_model(str(folder / "backbone"), spec, trust_remote_code=trust_remote_code)
    if (folder / "head.safetensors").exists():
        tensors = load_file(str(folder / "head.safetensors"))
        for name, module in model.parts().items():
            module.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    return model.eval()
