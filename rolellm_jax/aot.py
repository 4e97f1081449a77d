"""Compile the real train step for a TPU or GPU topology on this (CPU) machine and report its memory.

    python -m rolellm_jax.aot --config launch/configs/rolellama-7b.yaml --topology v5p:2x2x1
    python -m rolellm_jax.aot --config launch/configs/rolellama-7b-lora-1gpu.yaml --topology h100

Uses `jax.experimental.topologies.get_topology_desc`, no accelerator attached: TPU topologies
(v4 / v5e / v5p / v6e, ``<generation>:<chips shape>``) need libtpu; GPU ones (``h100``, ``h200``,
``a100``; ``h100:8`` is one host of 8, ``h100:2x8`` two hosts) need the CUDA PJRT plugin and, for
``--model.attention_impl=cudnn``, cuDNN: ``pip install -e '.[gpu-aot]'``. The mesh of the preset is
laid over the devices, the train step of the preset (same code as `rolellm_jax.train`,
params/optimiser sharded by the logical rules, batch over data x fsdp) is lowered against abstract
inputs and compiled by that backend's compiler, and `compiled.memory_analysis()` gives the
per-device footprint, compared with the chip's HBM (on a GPU: the share of it JAX preallocates,
XLA_PYTHON_CLIENT_MEM_FRACTION, 0.9 as launch/gpu sets it).

It also prints the model FLOPs of one step (training/flops.py, the 6N + attention convention MFU
uses) and what one step and the preset's whole run take on these chips at the MFU values of
`--mfu` (default 0.3,0.5). Those are what-ifs, not measurements: put in the MFU the training
progress bar reports on the real hardware for an actual estimate.
Exit status 0 when it fits, 3 when it does not (the message says which preset knob to lower).
Any other `--section.key=value` overrides the preset as in training.
"""

from __future__ import annotations

import sys

from rolellm_jax.errors import (
    EXIT_DOES_NOT_FIT,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_USER_ERROR,
    OOM_HINT,
    ConfigError,
    UserError,
    is_oom,
    print_error,
)


def take_flag(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of ``--name=value`` or ``--name value`` (the last one wins), and argv without it."""
    value, rest, i = None, [], 0
    while i < len(argv):
        if argv[i].startswith(name + "="):
            value = argv[i].split("=", 1)[1]
        elif argv[i] == name and i + 1 < len(argv):
            value, i = argv[i + 1], i + 1
        else:
            rest.append(argv[i])
        i += 1
    return value, rest


def parse_mfus(text: str) -> tuple[float, ...]:
    try:
        mfus = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--mfu={text}: expected MFU fractions like --mfu=0.3,0.5") from None
    if not all(0 < m <= 1 for m in mfus):
        raise ConfigError(f"--mfu={text}: MFU is a fraction in (0, 1]")
    return mfus


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    topology, rest = take_flag(argv, "--topology")
    mfu_text, rest = take_flag(rest, "--mfu")
    try:
        mfus = None if mfu_text is None else parse_mfus(mfu_text)
    except ConfigError as err:
        print_error(err)
        return EXIT_USAGE
    if any(a in ("-h", "--help") for a in rest):
        print(__doc__.strip())
        return EXIT_OK
    if not topology:
        print_error(
            ConfigError(
                "--topology is required: the chips to compile for, e.g. --topology v5p:2x2x1 or h100 (see --help)"
            )
        )
        return EXIT_USAGE
    from rolellm_jax.training.aot import compile_for_topology, report  # sets the compile-only environment

    try:
        result = compile_for_topology(rest, topology)
    except Exception as err:  # noqa: BLE001
        if is_oom(err):
            print(f"error: {topology}: the train step does not fit in HBM at compile time: {OOM_HINT}", file=sys.stderr)
            return EXIT_DOES_NOT_FIT
        if not isinstance(err, UserError):
            raise
        print_error(err)
        return EXIT_USER_ERROR
    print(report(result) if mfus is None else report(result, mfus))
    if not result["fits"]:
        print(f"does not fit: {OOM_HINT}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
