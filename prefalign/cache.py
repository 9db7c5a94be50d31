"""Where prefalign keeps what it can recompute but need not: reference log-probs, generated toy data.
PREFALIGN_CACHE moves it (tests give each test its own)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("PREFALIGN_CACHE", Path.home() / ".cache" / "prefalign"))
