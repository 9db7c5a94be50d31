"""Optional dependencies (`pip install prefalign[EXTRA]`): a missing one is a one-line error, not a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(RuntimeError):
    pass


def import_extra(module: str, extra: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{what} needs `pip install prefalign[{extra}]` ({exc})") from exc
