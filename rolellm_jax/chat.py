"""python -m rolellm_jax.chat: talk to a role, answers streamed.

    python -m rolellm_jax.chat --ckpt DIR (--role NAME --profiles SOURCE | --card FILE) [--cards DIR]
    python -m rolellm_jax.chat --base-url http://127.0.0.1:8000/v1 (--role NAME | --card FILE) [--model ID]

In-process on a checkpoint (the role system text built as in training; --profiles / --cards give
the roles /role can switch to), or a client of a running OpenAI-compatible server, where --role is
the server's model id for that role. Commands: /reset, /role NAME, /save FILE, /quit.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rolellm_jax.errors import run_cli


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m rolellm_jax.chat", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--ckpt", help="checkpoint folder: answer in this process")
    where.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--role", help="role name (a --profiles / --cards role, or the server's model id)")
    p.add_argument("--card", help="a character card file (.json / .png) to talk to")
    p.add_argument("--profiles", help="RoleBench source of role descriptions")
    p.add_argument("--cards", help="folder of character cards")
    p.add_argument("--model", help="with --base-url and a local role: the server's model id to ask")
    p.add_argument("--api-key", default=os.environ.get("ROLELLM_API_KEY"))
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--max-len", type=int, default=2048, help="in-process: conversation + answer tokens")
    return p.parse_args(argv)


def chat(args: argparse.Namespace) -> int:
    from rolellm_jax.inference.chat_session import ChatError, ChatSession, ServerBackend, run_repl
    from rolellm_jax.inference.roles import Role, merge_roles, roles_from_cards, roles_from_profiles

    roles = merge_roles(
        roles_from_profiles(args.profiles) if args.profiles else {},
        roles_from_cards(args.cards) if args.cards else {},
    )
    role = None
    if args.card:
        from data_gen.pipeline.cards import read_card

        card = read_card(args.card)
        role = roles[card.name] = Role(card.name, card.lang, card.description, card.greeting)
    elif args.role and args.role in roles:
        role = roles[args.role]
    elif args.role and args.ckpt:
        raise ChatError(f"--role {args.role}: not among the roles of --profiles / --cards ({len(roles)} known)")
    settings = {"temperature": args.temperature, "max_tokens": args.max_tokens}
    if args.base_url:
        backend = ServerBackend(args.base_url, args.api_key)
        model_id = args.model or (args.role if role is None else None)
        if model_id is None:
            raise ChatError("--model: the server's model id to ask on behalf of a local role or card")
    else:
        backend, model_id = _engine_backend(args), "local"
    session = ChatSession(backend, model_id or "", role, roles, settings)
    print(f"(talking to {role.name if role else model_id}; /reset, /role NAME, /save FILE, /quit)")
    run_repl(session, iter(sys.stdin.readline, ""), sys.stdout)
    return 0


def _engine_backend(args):
    from rolellm_jax.checkpoints.model_folder import load_model
    from rolellm_jax.checkpoints.tokenizer import load_tokenizer, stop_token_ids
    from rolellm_jax.inference.chat_session import EngineBackend
    from rolellm_jax.inference.engine import Engine

    model, cfg = load_model(args.ckpt)
    tokenizer = load_tokenizer(args.ckpt)
    engine = Engine(model, tokenizer, eos_token_ids=stop_token_ids(args.ckpt, tokenizer), slots=1, max_len=args.max_len)
    return EngineBackend(engine.start(), tokenizer, cfg.family)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_cli(lambda: chat(args))


if __name__ == "__main__":
    raise SystemExit(main())
