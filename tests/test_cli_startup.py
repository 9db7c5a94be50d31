"""Commands that load no model answer without importing what they do not use: the start-up cost is counted
in imported modules (torch, transformers, peft, accelerate), never timed."""

import json
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


@pytest.mark.parametrize("args", [["--help"], ["rm", "eval", "--help"], ["config", "show"],
                                  ["config", "accelerate"], ["--version"]])
def test_commands_that_load_nothing_import_no_torch(args):
    assert imported(args) == []


@pytest.mark.parametrize("args", [["losses"], ["train", "--help"]])  # train --help lists the registry's losses
def test_listing_losses_imports_torch_for_the_loss_functions_but_no_model_library(args):
    assert imported(args) == ["torch"]
