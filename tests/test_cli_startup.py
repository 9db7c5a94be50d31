"""Commands that load no model answer without importing what they do not use: the start-up cost is counted
in imported modules (torch, transformers, peft, accelerate), never timed."""

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "accelerate", "datasets")
PROBE = """
import json, sys
sys.argv = ["prefalign", *json.loads(sys.argv[1])]
from prefalign.cli.main import app
try:
    app()
except SystemExit:
    pass
print("\\nIMPORTED " + json.dumps(sorted(m for m in {heavy} if m in sys.modules)))
"""


def imported(args: list[str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), json.dumps(args)],
                          capture_output=True, text=True, timeout=120)
    line = [x for x in done.stdout.splitlines() if x.startswith("IMPORTED ")]
    assert line, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(line[-1].removeprefix("IMPORTED "))


# `losses` and `train --help` list every registered loss from the shipped catalog, not from the registry
@pytest.mark.parametrize("args", [["--help"], ["rm", "eval", "--help"], ["config", "show"],
                                  ["config", "accelerate"], ["--version"], ["losses"], ["train", "--help"]])
def test_commands_that_load_nothing_import_no_torch(args):
    assert imported(args) == []


def test_the_shipped_loss_catalog_is_the_registry():
    from prefalign.losses.catalog import build_catalog, read_catalog

    assert read_catalog() == build_catalog(), "a loss changed: rewrite the catalog with " \
        "`python -m prefalign.losses.catalog`"


def test_listings_show_every_loss_with_its_formula_unmangled():
    from prefalign.losses.catalog import read_catalog

    entries = {e["name"]: e for e in read_catalog()}
    assert {"dpo", "kto", "ppo_clip", "apo_zero_unpaired"} <= set(entries)
    done = subprocess.run([sys.executable, "-m", "prefalign.cli.main", "train", "--help"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})
    assert f"Losses ({len(entries)};" in done.stdout and "apo_zero_unpaired" in done.stdout
    done = subprocess.run([sys.executable, "-m", "prefalign.cli.main", "losses"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "2000"})
    assert entries["f_dpo"]["what"].split("\n")[0] in done.stdout  # its brackets survive rich
