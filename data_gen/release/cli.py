"""`python -m data_gen release build|verify|publish`: the versioned RoleBench Hugging Face release.

  build   --from DIR --version X.Y.Z --out OUT   original RoleBench layout or data_gen shard set -> HF dataset folder
  verify  OUT                                    checksums, row counts, schema, split leaks (exit 1 on a problem)
  publish OUT --repo NAMESPACE/rolebench         one commit + tag vX.Y.Z on the Hub (token: HF_TOKEN) [--dry-run]

The pieces, in this folder: layout (read sources), build (Parquet + manifest), card
(README/CHANGELOG), verify, publish.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from data_gen.errors import EXIT_USAGE, run_cli
from data_gen.release.build import MAX_SHARD_BYTES, build_release
from data_gen.release.layout import ReleaseError
from data_gen.release.publish import hub_api_from_env, plan_publish, publish, record_version
from data_gen.release.verify import verify_release

__all__ = ["ReleaseError", "build_release", "verify_release", "publish", "record_version", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_gen release", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build a Hugging Face dataset folder")
    b.add_argument("--from", dest="source", type=Path, required=True, help="original RoleBench layout or shard set")
    b.add_argument("--version", required=True, help="semver X.Y.Z")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--max-shard-bytes", type=int, default=MAX_SHARD_BYTES, help="uncompressed bytes per shard")
    b.add_argument("--card-template", type=Path, default=None, help="default: release/card_template.md")
    b.add_argument("--repo-id", default="NAMESPACE/rolebench", help="repo id shown in the card's load_dataset snippet")
    b.add_argument("--notes", default="", help="one line for this version's CHANGELOG entry")
    b.add_argument("--previous-changelog", type=Path, default=None, help="CHANGELOG.md of the previous release")
    b.add_argument("--record", type=Path, default=None, help="also copy manifest.json to this versions folder")
    b.add_argument("--overwrite", action="store_true", help="replace an existing release folder")
    b.add_argument("--name", default="RoleBench", help="pretty name in the card and manifest")
    b.add_argument(
        "--drop-train-leaks",
        action="store_true",
        help="drop train rows whose (role, question) is also in test (counted in the card; baseline overlap is kept)",
    )
    v = sub.add_parser("verify", help="verify a release folder")
    v.add_argument("out", type=Path)
    p = sub.add_parser("publish", help="upload to the Hub in one commit and tag it")
    p.add_argument("out", type=Path)
    p.add_argument("--repo", required=True, help="NAMESPACE/rolebench")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded, change nothing")
    p.add_argument("--versions-dir", type=Path, default=Path("release/versions"), help="where vX.Y.Z.json is recorded")
    return parser


def _dry_run_plan(out: Path, repo: str):
    """Dry run checks the Hub read-only when it can (tag refusal shows up); offline it plans locally."""
    try:
        import os

        from huggingface_hub import HfApi

        return plan_publish(out, repo, HfApi(token=os.environ.get("HF_TOKEN") or None)), ""
    except ReleaseError:
        raise
    except Exception as err:  # offline / no network: the local plan is still exact for the upload
        return plan_publish(out, repo, None), f"(Hub not reached: {type(err).__name__}; tag and deletions not checked)"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # build's warnings, one line each
    return run_cli(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    if args.command == "build":
        manifest = build_release(
            args.source,
            args.version,
            args.out,
            max_shard_bytes=args.max_shard_bytes,
            card_template=args.card_template,
            notes=args.notes,
            previous_changelog=args.previous_changelog,
            overwrite=args.overwrite,
            repo_id=args.repo_id,
            name=args.name,
            drop_leaks=args.drop_train_leaks,
        )
        if args.record:
            record_version(args.out, args.record)
        for name, config in manifest["configs"].items():
            counts = ", ".join(f"{s} {i['rows']}" for s, i in config["splits"].items())
            print(f"{name}: {counts}")
        print(f"built {args.out} (v{manifest['version']})")
        return 0
    if args.command == "verify":
        report = verify_release(args.out)
        for note in report.notes:
            print(note)
        for problem in report.problems:
            print(problem, file=sys.stderr)
        if report.ok:
            print(f"{args.out}: OK")
        return 0 if report.ok else 1
    if args.command == "publish":
        if args.dry_run:
            plan, remark = _dry_run_plan(args.out, args.repo)
            print("dry run: nothing uploaded " + remark)
            print(plan.describe())
            return 0
        plan = publish(args.out, args.repo, api=hub_api_from_env(), versions_dir=args.versions_dir)
        print(f"published datasets/{plan.repo_id} {plan.tag} ({len(plan.uploads)} files)")
        return 0
    return EXIT_USAGE  # argparse requires a command: not reached


if __name__ == "__main__":
    sys.exit(main())
