"""Our commands in child processes, run from the repository root (the CLI tests and the multi-process ones)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``python -m module args`` to its end, stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def start_python(code: str, *args: str, env: dict[str, str], stderr: int) -> subprocess.Popen:
    """``python -c code args`` started, its stdout a text pipe; ``stderr`` as for subprocess.Popen."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
    )
