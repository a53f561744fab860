"""The `llmkube` command as a user runs it, for tests of its verbs."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def llmkube(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `llmkube ARGS` from the repository root, wide enough that tables do not wrap."""
    return subprocess.run(
        [sys.executable, "-m", "llmkube.cli.main", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
