"""The example configs shipped in the package (prefalign/examples, also `examples/` in a checkout): one per
method family. Each names its command on a line `#   prefalign COMMAND -c examples/NAME.yaml`, which picks
the schema it is validated against; `prefalign init NAME` copies one to start from."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
COMMAND_LINE = re.compile(r"^#\s+prefalign (train|sft|budget|dpa|online|rl|rm train|decode) -c examples/", re.MULTILINE)


def shipped_examples() -> dict[str, Path]:
    """name ("dpo", "rl/grpo") -> file."""
    return {str(p.relative_to(EXAMPLES_DIR).with_suffix("")): p for p in sorted(EXAMPLES_DIR.rglob("*.yaml"))}


def example_command(path: Path) -> str:
    found = COMMAND_LINE.search(path.read_text())
    if found is None:
        raise ValueError(f"{path}: no `#   prefalign COMMAND -c examples/...` line naming its command")
    return found.group(1)


def schema_for(command: str) -> type[BaseModel]:
    from prefalign.config import schema

    return {"train": schema.TrainConfig, "online": schema.OnlineTrainConfig, "rl": schema.RLTrainConfig,
            "rm train": schema.RewardTrainConfig, "decode": schema.DecodeConfig, "sft": schema.SFTTrainConfig,
            "budget": schema.BudgetConfig, "dpa": schema.DPATrainConfig}[command]


def example_summary(path: Path) -> str:
    """The example's first comment line."""
    return path.read_text().splitlines()[0].lstrip("# ").strip()
