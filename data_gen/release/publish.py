"""Publish a verified release folder to the Hugging Face Hub: one commit, one immutable tag.

The Hub client is injected (`api`): tests pass a stand-in, the CLI passes `huggingface_hub.HfApi`
built with the token from HF_TOKEN (never printed or written). The plan (files, deletions, tag)
is computed first, so `--dry-run` shows exactly what the real run would do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_gen.release.layout import ReleaseError, check_version
from data_gen.release.verify import verify_release

KEEP_REMOTE = {".gitattributes"}  # Hub-managed file a release commit never deletes


def _repo_state(exists: bool | None) -> str:
    return "exists" if exists else "will be created" if exists is False else "not checked"


@dataclass
class PublishPlan:
    repo_id: str
    version: str
    tag: str
    uploads: list[tuple[str, int]]  # (path in repo, bytes)
    deletions: list[str] = field(default_factory=list)
    name: str = "RoleBench"
    parent_commit: str | None = None  # head of main when planned: the commit fails if it moved
    repo_exists: bool | None = None  # None: unknown (not checked)

    @property
    def message(self) -> str:
        return f"{self.name} v{self.version}"

    def describe(self) -> str:
        lines = [
            f"repo: datasets/{self.repo_id} ({_repo_state(self.repo_exists)})",
            f"tag: {self.tag}",
            f"commit: {self.message} ({len(self.uploads)} files, {sum(b for _, b in self.uploads)} bytes)",
        ]
        lines += [f"  upload {path} ({size} bytes)" for path, size in self.uploads]
        lines += [f"  delete {path}" for path in self.deletions]
        return "\n".join(lines)


def release_files(out: Path) -> list[Path]:
    """Every file of the release folder, in a fixed order (hidden files excluded)."""
    return sorted(
        p for p in out.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts)
    )


def _is_not_found(err: Exception) -> bool:
    return (
        type(err).__name__ in {"RepositoryNotFoundError", "RevisionNotFoundError"}
        or getattr(getattr(err, "response", None), "status_code", None) == 404
    )


def plan_publish(out: Path, repo_id: str, api: Any | None) -> PublishPlan:
    """Verify the folder, then work out the commit; refuses when the version tag already exists."""
    out = Path(out)
    report = verify_release(out)
    if not report.ok:
        raise ReleaseError(f"{out}: verify failed ({report.problems[0]}); not publishing")
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    version = check_version(manifest["version"])
    tag = f"v{version}"
    files = release_files(out)
    plan = PublishPlan(
        repo_id,
        version,
        tag,
        [(p.relative_to(out).as_posix(), p.stat().st_size) for p in files],
        name=manifest.get("name", "RoleBench"),
    )
    if api is None:
        return plan
    try:
        refs = api.list_repo_refs(repo_id, repo_type="dataset")
        remote = set(api.list_repo_files(repo_id, repo_type="dataset"))
        plan.repo_exists = True
    except Exception as err:
        if not _is_not_found(err):
            raise
        refs, remote, plan.repo_exists = None, set(), False
    if refs is not None and tag in {ref.name for ref in refs.tags}:
        raise ReleaseError(f"datasets/{repo_id}: tag {tag} already exists (versions are immutable; bump the version)")
    if refs is not None:
        plan.parent_commit = next((b.target_commit for b in refs.branches if b.name == "main"), None)
    uploaded = {path for path, _ in plan.uploads}
    plan.deletions = sorted(remote - uploaded - KEEP_REMOTE)
    return plan


def execute_publish(out: Path, plan: PublishPlan, api: Any) -> str:
    """create_repo, one create_commit (uploads + stale deletions), create_tag; returns the commit id."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    out = Path(out)
    api.create_repo(plan.repo_id, repo_type="dataset", exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(out / path)) for path, _ in plan.uploads]
    operations += [CommitOperationDelete(path_in_repo=path) for path in plan.deletions]
    commit = api.create_commit(
        plan.repo_id,
        operations=operations,
        commit_message=plan.message,
        repo_type="dataset",
        parent_commit=plan.parent_commit,  # deletions were planned against this head
    )
    api.create_tag(plan.repo_id, tag=plan.tag, revision=commit.oid, repo_type="dataset", tag_message=plan.message)
    return commit.oid


def record_version(out: Path, versions_dir: Path, *, check_only: bool = False) -> Path:
    """Copy the manifest to versions_dir/vX.Y.Z.json; an existing, different record is refused."""
    manifest = (Path(out) / "manifest.json").read_bytes()
    version = json.loads(manifest)["version"]
    target = Path(versions_dir) / f"v{version}.json"
    if target.exists() and target.read_bytes() != manifest:
        raise ReleaseError(
            f"{target}: a different manifest is already recorded for v{version} (versions are immutable)"
        )
    if check_only:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(manifest)
    return target


def _hub_failure(err: Exception, repo_id: str, doing: str, consequence: str) -> ReleaseError:
    first_line = (str(err).strip().splitlines() or [""])[0][:200]
    return ReleaseError(f"datasets/{repo_id}: {doing} failed ({type(err).__name__}: {first_line}); {consequence}")


def hub_api_from_env() -> Any:
    """The real client; the token comes from HF_TOKEN only and is never echoed."""
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ReleaseError("HF_TOKEN is not set (publishing needs a write token in the environment)")
    from huggingface_hub import HfApi

    return HfApi(token=token)


def publish(
    out: Path,
    repo_id: str,
    *,
    api: Any | None = None,
    dry_run: bool = False,
    versions_dir: Path | None = Path("release/versions"),
) -> PublishPlan:
    """Plan, then (unless dry_run) commit, tag and record the version manifest."""
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise ReleaseError(f"--repo {repo_id!r}: expected NAMESPACE/NAME")
    if api is None and not dry_run:
        api = hub_api_from_env()
    try:
        plan = plan_publish(out, repo_id, api)
    except ReleaseError:
        raise
    except Exception as err:  # network, auth, Hub outage: one line, not the client's traceback
        raise _hub_failure(err, repo_id, "reading the repository", "nothing was uploaded") from None
    if dry_run:
        return plan
    if versions_dir is not None:  # refuse before uploading, not after
        record_version(out, versions_dir, check_only=True)
    try:
        execute_publish(out, plan, api)
    except Exception as err:  # noqa: BLE001
        raise _hub_failure(err, repo_id, "publishing", f"{plan.tag} is not tagged: run publish again") from None
    if versions_dir is not None:
        record_version(out, versions_dir)
    return plan
