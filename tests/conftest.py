"""Test environment: 8 fake CPU devices, offline Hugging Face, persistent JAX compile cache.

These variables must be set before jax (or transformers/datasets) is first imported.
"""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "rolellm-jax-test-compile-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_SAMPLE = REPO_ROOT.parent / "shared" / "rolebench-sample"


@pytest.fixture
def rolebench_sample() -> Path:
    """Real RoleBench rows, kept outside the repository (never copied into it)."""
    if not SHARED_SAMPLE.is_dir():
        pytest.skip(f"real RoleBench sample not found at {SHARED_SAMPLE} (only present in this team's checkouts)")
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a float32 Hugging Face folder, built once per run (tests/helpers/smollm2.py)."""
    from tests.helpers.smollm2 import build_smollm2_folder

    return build_smollm2_folder(tmp_path_factory.mktemp("smollm2-135m-instruct"))
