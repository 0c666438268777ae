#!/usr/bin/env bash
# Set up (idempotent) and run the default test suite (everything not marked slow).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` for the long tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FLYWHEEL_HOME="${FLYWHEEL_HOME:-$(mktemp -d -t flywheel-test-XXXXXX)}"
if [ $# -eq 0 ]; then
  .venv/bin/ruff check .   # lint first: a style error fails like a test
  set -- -m "not slow"
fi
# pytest exits 5 when no test ran: that fails this script like any other failure.
exec .venv/bin/python -m pytest -q "$@"
