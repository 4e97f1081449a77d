"""python -m data_gen profiles|context-instruct|rolegpt|shards|build|release ...

Every stage reads and writes under ``--work`` and replays finished requests from
``WORK/journal.sqlite``: rerunning a stage (or ``build``) after a crash or kill pays only for what
is missing and gives the same files. ``--offline`` replays only (no key needed).
The API key comes from OPENAI_API_KEY (preferred: flags can end up in shell history).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from pathlib import Path

from data_gen.errors import run_cli
from data_gen.llm.cli_flags import add_llm_flags, client_from_args
from data_gen.pipeline.config import GenConfig


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(GenConfig)
    for f in dataclasses.fields(GenConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        t = hints[f.name]
        if t == list[str]:
            p.add_argument(flag, nargs="*", default=default, help="(default: none)")
        else:
            p.add_argument(flag, type=t, default=default, help=f"(default: {default})")


def _add_sources(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--scripts", type=Path, help="folder of *.txt scripts")
    g.add_argument("--cards", type=Path, help="folder of character cards (.json / .png, V1/V2/V3)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m data_gen", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def stage(name: str, help_: str, *, llm: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--work", type=Path, required=True, help="working folder (journal, stage outputs)")
        _add_config_flags(p)
        if llm:
            add_llm_flags(p)
        return p

    p = stage("profiles", "stage 1: scripts or character cards -> RoleBench profiles (dialogues, desc.json, segments)")
    _add_sources(p)
    stage("context-instruct", "stage 2: role-specific Q/A from segments and descriptions")
    p = stage("rolegpt", "stage 3: in-character answers to general instructions (6 samples)")
    p.add_argument("--instructions", type=Path, required=True, help="JSONL of {instruction, input?, output?}")
    allow_empty = "write the shard set even if a role_specific train split is empty (refused by default)"
    p = stage("shards", "stage 4: split and write the versioned shard set OUT/vX.Y.Z", llm=False)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", required=True, help="X.Y.Z; an existing version is never overwritten")
    p.add_argument("--allow-empty", action="store_true", help=allow_empty)
    p = stage("build", "all stages: profiles, context-instruct, rolegpt, shards")
    _add_sources(p)
    p.add_argument("--instructions", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--allow-empty", action="store_true", help=allow_empty)
    sub.add_parser("release", help="dataset release: python -m data_gen release --help", add_help=False)
    return ap


def check_inputs(args: argparse.Namespace) -> None:
    """The command's input files and output version, checked before the work folder or journal exist."""
    from data_gen.pipeline import build as pipeline

    pipeline.check_inputs(
        getattr(args, "scripts", None),
        getattr(args, "instructions", None),
        getattr(args, "out", None) if args.command in ("build", "shards") else None,
        getattr(args, "version", None),
    )


def run(args: argparse.Namespace) -> int:
    from data_gen.pipeline.work_lock import locked_work_folder, remove_if_unused

    cfg = GenConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(GenConfig)})
    check_inputs(args)
    created = not args.work.exists()
    try:
        with locked_work_folder(args.work):
            return _run_stage(args, cfg)
    except BaseException:
        if created:  # a failed start leaves no empty work folder or journal behind
            from data_gen.llm.journal import count_rows

            remove_if_unused(args.work, count_rows(args.work / "journal.sqlite"))
        raise


def _run_stage(args: argparse.Namespace, cfg: GenConfig) -> int:
    from data_gen.llm.limits import usd
    from data_gen.pipeline import build as pipeline

    if args.command == "shards":
        print(pipeline.stage_shards(args.work, args.out, args.version, cfg, args.allow_empty))
        return 0
    if args.command == "profiles" and args.cards:  # no LLM call: no client, no key needed
        pipeline.stage_card_profiles(args.work, args.cards, cfg)
        return 0
    client = client_from_args(args, cfg.model, args.work / "journal.sqlite")
    try:
        if args.command == "profiles":
            pipeline.stage_profiles(args.work, args.scripts, cfg, client)
        elif args.command == "context-instruct":
            pipeline.stage_context_instruct(args.work, cfg, client)
        elif args.command == "rolegpt":
            pipeline.stage_rolegpt(args.work, args.instructions, cfg, client)
        elif args.command == "build":
            built = pipeline.build(
                args.work,
                args.scripts,
                args.instructions,
                args.out,
                args.version,
                cfg,
                client,
                args.allow_empty,
                cards=args.cards,
            )
            print(built)
    finally:
        client.close()
    logging.getLogger("data_gen").info(
        "new requests %d (retries %d), spent %s", client.new_requests, client.retries, usd(client.spent)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "release":  # owned by data_gen/release.py; imported only when asked for
        try:
            from data_gen.release.cli import main as release_main
        except ModuleNotFoundError as e:
            if e.name != "data_gen.release":
                raise
            print("error: data_gen.release is not part of this installation", file=sys.stderr)
            return 1
        return release_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2", "openai"):  # one line per HTTP request otherwise (bm25s: rolegpt.py)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return run_cli(lambda: run(args))  # every error of data_gen's is a UserError: one line, exit 1


if __name__ == "__main__":
    sys.exit(main())
