"""RoCIT training: `python -m rolellm_jax.train [--config FILE] [--section.key=value ...]`.

With no arguments it runs the demo preset (launch/configs/demo.yaml): a tiny LLaMA trained from
scratch, with a tokenizer trained on the demo data on the fly, on the RoleBench-format demo
release in release/rolebench-demo, offline on a CPU in a few minutes. The real RoleLLaMA run is
`--config launch/configs/rolellama-7b.yaml --model.init=/path/to/hf/llama`.

A run writes into train.output_dir: checkpoints/ (orbax; resumed automatically), metrics.jsonl,
tensorboard/, loss_curve.png, tokenizer/ (when trained on the fly) and export/ (the final model
checkpoint, LoRA merged, ready for `python -m rolellm_jax.convert jax-to-hf`).
"""

from __future__ import annotations

import logging
import sys

from rolellm_jax.errors import EXIT_OK, run_cli


def _train(argv: list[str]) -> int:
    import jax

    from rolellm_jax.parallel.distributed import maybe_initialize
    from rolellm_jax.training.run import run
    from rolellm_jax.training.run_config import help_text, parse_args

    cfg, want_help = parse_args(argv)
    if want_help:
        print(help_text(cfg, "python -m rolellm_jax.train"))
        return EXIT_OK
    maybe_initialize()  # jax.distributed when launched on several hosts; before any backend use
    result = run(cfg)
    if jax.process_index() == 0:
        note = f"{result.steps_run} steps this run" if result.steps_run else "already complete: nothing to train"
        print(f"loss: first {result.first_loss:.4f} -> last {result.last_loss:.4f} ({note})")
        print(f"checkpoints: {result.checkpoint_dir}")
        if result.export_dir:
            print(
                f"export:      {result.export_dir}  "
                f"(python -m rolellm_jax.convert jax-to-hf --ckpt {result.export_dir} --out OUT)"
            )
        if result.loss_curve:
            print(f"loss curve:  {result.loss_curve}")
        print(f"metrics:     {result.metrics}  (tensorboard --logdir {result.metrics.parent / 'tensorboard'})")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # no-op when already configured
    logging.getLogger("rolellm_jax").setLevel(logging.INFO)  # our progress notes; others stay at WARNING
    return run_cli(lambda: _train(argv))


if __name__ == "__main__":
    from rolellm_jax.training.glibc_thp import reexec_with_huge_pages

    reexec_with_huge_pages()  # a CPU run starts again with glibc's huge-page malloc (training/glibc_thp.py)
    sys.exit(main())
