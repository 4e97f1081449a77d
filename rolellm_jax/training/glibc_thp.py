"""The training CLI re-run once on a CPU host with glibc's huge-page malloc: ``reexec_with_huge_pages``.

XLA:CPU allocates a step's large buffers afresh every step (a SmolLM2 LoRA step's [1024, 49152]
float32 logits alone are 200 MB), and on 4 KiB pages it page-faults through them again each time.
glibc >= 2.35 backs its large allocations with transparent huge pages when the process starts with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``: the SmolLM2 bf16 LoRA step on a 2-core Zen 5 went from
566-574 to 844-865 tokens/s, runs alternated (transformers + PEFT: 587-598 -> 708-713; benchmarks/
RESULTS.md, "The LoRA step on a Zen 5 machine: huge pages, not the GEMMs"). glibc reads the setting
only at start, so ``python -m rolellm_jax.train`` executes itself again (same PID, same command
line) with it added, when:
Linux with glibc >= 2.35, transparent huge pages in ``madvise`` mode (``always`` needs no help,
``never`` allows none), ``GLIBC_TUNABLES`` without a ``glibc.malloc.hugetlb`` of the user's own, a
CPU run (``JAX_PLATFORMS`` only ``cpu``, or no GPU/TPU plugin installed), and ``ROLELLM_HUGE_PAGES``
not ``0`` (the opt-out, and the guard the re-run carries; any value but 0 or 1 is refused).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
GUARD = "ROLELLM_HUGE_PAGES"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def _glibc_at_least(major: int, minor: int) -> bool:
    name, version = platform.libc_ver()
    try:
        return name == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= (major, minor)
    except ValueError:
        return False


def _cpu_run(environ: Mapping[str, str]) -> bool:
    platforms = [p.strip() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return all(p == "cpu" for p in platforms)
    return not any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS)


def why_not(environ: Mapping[str, str]) -> str | None:
    """None when this process should re-run with the tunable; else the reason it does not."""
    if environ.get(GUARD) == "0":
        return f"{GUARD}=0"
    if "glibc.malloc.hugetlb" in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES already sets glibc.malloc.hugetlb"
    if not sys.platform.startswith("linux") or not _glibc_at_least(2, 35):
        return "not Linux with glibc >= 2.35"
    try:
        if "[madvise]" not in THP_MODE.read_text():
            return f"transparent huge pages not in madvise mode ({THP_MODE})"
    except OSError:
        return f"no {THP_MODE}"
    if not _cpu_run(environ):
        return "not a CPU run"
    return None


def environment_with_huge_pages(environ: Mapping[str, str]) -> dict[str, str]:
    tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
    return {**environ, "GLIBC_TUNABLES": ":".join([*tunables, TUNABLE]), GUARD: "0"}


def reexec_with_huge_pages() -> None:
    """Replace this process by its own command line (``sys.orig_argv``) with the tunable, where
    :func:`why_not` allows; otherwise return and let the caller go on."""
    if os.environ.get(GUARD, "1") not in ("0", "1"):
        raise SystemExit(f"{GUARD}={os.environ[GUARD]!r}: expected 0 (keep the process as started) or 1")
    if why_not(os.environ) is not None:
        return
    print(
        f"re-running with GLIBC_TUNABLES={TUNABLE}: huge pages for XLA:CPU's buffers ({GUARD}=0: not)", file=sys.stderr
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environment_with_huge_pages(os.environ))
