#!/usr/bin/env bash
# The whole test suite from nothing: environment with the dev extras, lint, then every test (slow ones too).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/env.sh dev
.venv/bin/ruff check .
# Two workers with one thread each (tests/conftest.py), idle workers taking tests from the busy one.
exec .venv/bin/python -m pytest -m "slow or not slow" -n 2 --dist worksteal --durations=25 "$@"
