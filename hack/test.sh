#!/usr/bin/env bash
# The project's test command (CI runs exactly this): set-up if needed, lint, types, then pytest.
# Extra arguments go to pytest, e.g. `hack/test.sh -m unit` for the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/setup.sh --tests
echo "==> ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy" >&2
.venv/bin/mypy
echo "==> pytest" >&2
exec .venv/bin/pytest "$@"
