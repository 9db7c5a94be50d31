"""Preference losses: pure functions of log-prob tensors, registered by name (see registry.py).

The names below resolve on first use, so that `prefalign.losses.catalog` (the listing `prefalign losses`
reads) imports no torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"PairLogps": "prefalign.losses.inputs", "LOSSES": "prefalign.losses.registry",
            "BoundLoss": "prefalign.losses.registry", "build_losses": "prefalign.losses.registry",
            "register_loss": "prefalign.losses.registry"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # noqa: ANN401 - any exported object
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prefalign.losses' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
