"""What `prefalign losses` and `train --help` show about every registered loss, read without importing torch.

The loss functions are torch code, and importing torch takes seconds, which a listing should not pay. So the
listing reads `catalog.json`, written from the registry by `python -m prefalign.losses.catalog`; a test
checks that the file equals what the registry gives, so a loss added without rewriting it fails CI."""

from __future__ import annotations

import json
import sys
from importlib import resources
from typing import TypedDict

CATALOG_FILE = "catalog.json"


class CatalogEntry(TypedDict):
    name: str
    kind: str
    parameters: str  # "beta=0.1, label_smoothing=0.0"; a required parameter has no default shown
    reference: bool  # whether the loss needs a reference model
    what: str  # the docstring's first paragraph: the paper and the formula


def build_catalog() -> list[CatalogEntry]:
    """The catalog as the registry has it now (imports every loss module, and torch)."""
    from prefalign.losses.registry import LOSSES, ensure_registered

    ensure_registered()
    entries = []
    for name, spec in sorted(LOSSES.items()):
        params = ", ".join(k if f.is_required() else f"{k}={f.get_default(call_default_factory=True)}"
                           for k, f in spec.params.model_fields.items())
        entries.append(CatalogEntry(name=name, kind=spec.kind, parameters=params, reference=spec.needs_reference,
                                    what=spec.doc.split("\n\n")[0]))
    return entries


def read_catalog() -> list[CatalogEntry]:
    """The catalog shipped with the package (no torch)."""
    return json.loads(resources.files("prefalign.losses").joinpath(CATALOG_FILE).read_text(encoding="utf-8"))


def render(entries: list[CatalogEntry]) -> str:
    return json.dumps(entries, indent=1, ensure_ascii=False) + "\n"


def main() -> None:
    from pathlib import Path

    from prefalign.atomic_files import write_text_atomic

    path = Path(__file__).with_name(CATALOG_FILE)
    write_text_atomic(path, render(build_catalog()))
    print(f"{len(read_catalog())} losses in {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
