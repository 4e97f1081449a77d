"""python -m rolellm_jax.serve: an OpenAI-compatible server for a checkpoint and its roles.

    python -m rolellm_jax.serve --ckpt DIR [--profiles SOURCE] [--cards DIR] [--host 127.0.0.1] [--port 8000]
        [--api-key KEY | env ROLELLM_API_KEY] [--slots 16] [--max-len N] [--insecure-no-auth]

``GET /v1/models`` lists the checkpoint (its folder name, or --model-id) and, with --profiles (a
RoleBench source: original folder, release folder or Hub id), one model id per role: a request to
a role's id gets the role system instruction exactly as training built it; --cards adds one id per
character card (Character Card V1/V2/V3 JSON or PNG, data_gen/pipeline/cards.py). Any OpenAI client
works: ``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=KEY)``. See inference/server.py
(HTTP) and inference/engine.py (continuous batching over --slots KV-cache rows).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from rolellm_jax.errors import run_cli


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rolellm_jax.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="our checkpoint folder (or a Hugging Face model folder)")
    p.add_argument("--profiles", help="RoleBench source whose role descriptions become model ids")
    p.add_argument("--cards", help="folder of character cards (.json / .png) that become model ids")
    p.add_argument("--model-id", help="the checkpoint's model id (default: its folder name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("ROLELLM_API_KEY"), help="required Bearer key")
    p.add_argument("--insecure-no-auth", action="store_true", help="allow a non-loopback --host with no key")
    p.add_argument("--slots", type=int, default=16, help="requests decoded together (KV-cache rows)")
    p.add_argument("--max-len", type=int, help="prompt + answer tokens per request (default: min(model, 2048))")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot before 429")
    p.add_argument("--dtype", help="compute dtype override (e.g. float32 on CPU)")
    p.add_argument("--mesh.data", dest="mesh_data", type=int, default=1, help="data-parallel mesh size")
    p.add_argument("--mesh.fsdp", dest="mesh_fsdp", type=int, default=-1, help="FSDP mesh size (-1 = the rest)")
    p.add_argument("--mesh.tensor", dest="mesh_tensor", type=int, default=1, help="tensor-parallel mesh size")
    p.add_argument("--no-warmup", action="store_true", help="compile and first-run shapes on first use, not at start")
    return p.parse_args(argv)


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rolellm_jax.checkpoints.model_folder import load_model
    from rolellm_jax.checkpoints.tokenizer import load_tokenizer, stop_token_ids
    from rolellm_jax.inference.engine import Engine
    from rolellm_jax.inference.roles import merge_roles, roles_from_cards, roles_from_profiles
    from rolellm_jax.inference.server import ServedModel, ServeError, build_app, check_bind
    from rolellm_jax.parallel import sharding

    check_bind(args.host, args.api_key, args.insecure_no_auth)
    if args.slots < 1:
        raise ServeError(f"--slots {args.slots}: must be >= 1")
    roles = merge_roles(
        roles_from_profiles(args.profiles) if args.profiles else {},
        roles_from_cards(args.cards) if args.cards else {},
    )
    mesh = sharding.make_mesh(sharding.MeshConfig(data=args.mesh_data, fsdp=args.mesh_fsdp, tensor=args.mesh_tensor))
    model, cfg = load_model(args.ckpt, mesh=mesh, **({"dtype": args.dtype} if args.dtype else {}))
    tokenizer = load_tokenizer(args.ckpt)
    max_len = args.max_len or min(cfg.max_position_embeddings, 2048)
    if not 2 <= max_len <= cfg.max_position_embeddings:
        raise ServeError(f"--max-len {max_len}: must be in [2, max_position_embeddings={cfg.max_position_embeddings}]")
    engine = Engine(
        model,
        tokenizer,
        eos_token_ids=stop_token_ids(args.ckpt, tokenizer),
        slots=args.slots,
        max_len=max_len,
        max_queue=args.max_queue,
        mesh=mesh,
    )
    if not args.no_warmup:
        logging.getLogger(__name__).warning(
            "warming up: compiling and running %d prefill and %d decode shapes once...",
            len(engine.prefill_shapes),
            len(engine.decode_widths) * len(engine.spans),
        )
        engine.warmup()
    model_id = args.model_id or Path(args.ckpt).resolve().name
    app = build_app(ServedModel(engine.start(), tokenizer, cfg.family, model_id, roles), api_key=args.api_key)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        engine.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
