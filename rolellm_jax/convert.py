"""Hugging Face checkpoints <-> ours. `python -m rolellm_jax.convert hf-to-jax|jax-to-hf ...`

hf-to-jax: a LlamaForCausalLM / GlmForCausalLM folder (or ChatGLM2/3 in its original naming) is
streamed tensor by tensor into preallocated stacked numpy arrays (rename + transpose only), then
saved as our checkpoint (model_folder): peak host memory stays near the checkpoint size.
jax-to-hf: our checkpoint back to a folder that `AutoModelForCausalLM.from_pretrained` loads
without remote code: sharded safetensors + index, config.json, generation_config.json, tokenizer.
Tensors keep their stored dtype both ways, so HF -> ours -> HF is bit-exact.
"""

from __future__ import annotations

import argparse
import sys

from rolellm_jax.errors import EXIT_OK, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rolellm_jax.convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    to_jax = sub.add_parser("hf-to-jax", help="HF safetensors folder -> our orbax checkpoint")
    to_jax.add_argument("--hf", required=True, help="HF checkpoint folder (config.json + *.safetensors)")
    to_jax.add_argument("--out", required=True, help="checkpoint folder to write, or a bucket URL (gs://...)")
    to_jax.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint at --out")
    to_hf = sub.add_parser("jax-to-hf", help="our checkpoint -> HF folder for AutoModelForCausalLM")
    to_hf.add_argument("--ckpt", required=True, help="our checkpoint folder, or a bucket URL (gs://...)")
    to_hf.add_argument("--out", required=True, help="HF folder to write")
    to_hf.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    to_hf.add_argument(
        "--max-shard-size", default="2GB", help="largest shard, e.g. 2GB or 500MB (memory: model + ~2 shards)"
    )
    return parser


def _convert(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from rolellm_jax.checkpoints.hf_convert import hf_to_jax, jax_to_hf
    from rolellm_jax.checkpoints.model_folder import check_model_folder

    if args.command == "hf-to-jax":
        check_model_folder(args.hf, "--hf")
    else:
        check_model_folder(args.ckpt, "--ckpt")
    if args.command == "hf-to-jax":
        cfg = hf_to_jax(args.hf, args.out, overwrite=args.overwrite)
        print(f"wrote {args.out} ({cfg.family}, {cfg.num_hidden_layers} layers, {cfg.param_dtype})")
    else:
        files = jax_to_hf(args.ckpt, args.out, max_shard_size=args.max_shard_size, overwrite=args.overwrite)
        print(f"wrote {args.out} ({len(files)} safetensors file(s))")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    import logging

    from rolellm_jax.parallel.storage import is_url

    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # our warnings (e.g. no tokenizer files)
    parser = build_parser()
    args = parser.parse_args(argv)
    hf_folder = ("--hf", args.hf) if args.command == "hf-to-jax" else ("--out", args.out)
    if is_url(hf_folder[1]):  # safetensors and transformers read and write local files
        parser.error(f"{hf_folder[0]} {hf_folder[1]}: the Hugging Face folder must be local")
    return run_cli(lambda: _convert(parser, args))


if __name__ == "__main__":
    sys.exit(main())
