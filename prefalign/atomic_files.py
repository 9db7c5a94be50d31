"""Write files and folders so that a reader never sees them half-written: temporary name, then rename."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_result(result: dict, json_out: Path | None, doc: Path | None, render: Callable[[dict], str]) -> None:
    """An evaluation script's outputs: the figures as JSON, and the markdown `render` makes of them."""
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(result, indent=2))
    if doc is not None:
        write_text_atomic(doc, render(result))


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place; an older folder of that name is removed only afterwards."""
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
