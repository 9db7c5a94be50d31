"""The command line of an evaluation script that trains over seeds: measure, or re-render a saved JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from prefalign.atomic_files import write_result


def seeded_table_main(description: str, measure: Callable[[list[int], int], dict], render: Callable[[dict], str],
                      seeds: tuple[int, ...] = (0, 1, 2), steps: int = 150) -> None:
    """--seeds and --steps go to `measure`; its figures go to --json and `render`'s markdown to --doc."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--doc", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path, help="only rewrite --doc from a saved --json")
    args = parser.parse_args()
    result = json.loads(args.from_json.read_text()) if args.from_json else measure(args.seeds, args.steps)
    write_result(result, args.json, args.doc, render)
