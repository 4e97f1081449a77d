"""Issue 16, item 13: `dir(rolellm_jax)` lists the public API (it was empty), still loaded lazily."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_dir_lists_the_public_api_and_import_stays_cheap():
    code = (
        "import sys, rolellm_jax; names = dir(rolellm_jax); assert 'jax' not in sys.modules, 'not lazy'; "
        "assert {'load_model', 'ModelConfig', 'generate', 'jax_to_hf', 'score_files'} <= set(names), names; "
        "assert all(callable(getattr(rolellm_jax, n)) for n in rolellm_jax.__all__)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
