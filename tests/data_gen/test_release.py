"""The RoleBench release: datasets.load_dataset loads what we build; verify and publish guard it.

Sources: the real RoleBench rows (rolebench_sample fixture: Chinese, string/list `type` quirk), a
data_gen-shaped shard set made from the demo source, and the committed release/rolebench-demo.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import HfApi

from data_gen.release import cli as release
from data_gen.release.build import build_release
from data_gen.release.layout import ReleaseError, features_for
from data_gen.release.publish import plan_publish, publish
from data_gen.release.verify import verify_release
from tests.helpers.rolebench_fixtures import release_manifest_entry

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SOURCE = REPO_ROOT / "release" / "demo-source"
DEMO_RELEASE = REPO_ROOT / "release" / "rolebench-demo"
CONFIGS = [
    "eng-instruction_generalization-general",
    "eng-instruction_generalization-role_specific",
    "eng-role_generalization-general",
    "eng-role_generalization-role_specific",
    "zh-general",
    "zh-role_specific",
    "profiles-eng",
    "dialogues-eng",
    "profiles-zh",
    "dialogues-zh",
]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load(out: Path, config: str, cache: Path, **kwargs):
    return datasets.load_dataset(str(out), config, cache_dir=str(cache), **kwargs)


def make_demo_source(out: Path) -> Path:
    spec = importlib.util.spec_from_file_location("make_demo_source", DEMO_SOURCE / "make_demo_source.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(out)])
    return out


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_shard_set(tmp_path: Path, version: str = "1.2.0") -> Path:
    """A shard set shaped as data_gen.shards writes it: OUT/vX.Y.Z/<original layout> + manifest.json
    (files: rows + sha256, models, prompt template hashes, usage) and raw.jsonl RAW references."""
    root = tmp_path / "shards"
    vdir = make_demo_source(root / f"v{version}")
    (vdir / "SOURCE.md").unlink()
    for test in vdir.glob("rolebench-*/**/general/test.jsonl"):
        rows = jsonl(test)
        (test.parent / "raw.jsonl").write_text(
            "".join(
                json.dumps(
                    {"role": r["role"], "question": r["question"], "generated": [r["generated"][0]]}, ensure_ascii=False
                )
                + "\n"
                for r in rows
            )
        )
    files = {
        p.relative_to(vdir).as_posix(): {
            "rows": len(p.read_text().splitlines()),
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in sorted(vdir.rglob("*.json*"))
    }
    manifest = {
        "version": version,
        "lang": "en",
        "files": files,
        "generator": {"data_gen_version": "0.1.0", "config": {"seed": 0}},
        "models": ["gpt-4-0613"],
        "prompt_templates": {"rolegpt_en.txt": "ab12"},
        "usage": {"total": {"requests": 10, "cost_usd": 0.01}},
    }
    (vdir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


# ---------------------------------------------------------------- build + load_dataset


def test_build_from_original_layout_loads_every_config_and_split(rolebench_sample, tmp_path):
    out = tmp_path / "rel"
    manifest = build_release(rolebench_sample, "1.0.0", out)
    sources = {
        "eng-instruction_generalization-role_specific": "rolebench-eng/instruction-generalization/role_specific",
        "zh-general": "rolebench-zh/general",
        "zh-role_specific": "rolebench-zh/role_specific",
    }
    assert list(manifest["configs"]) == list(sources)
    for config, folder in sources.items():
        ds = load(out, config, tmp_path / "cache")
        stream = load(out, config, tmp_path / "cache", streaming=True)
        for split in ds:
            rows = jsonl(rolebench_sample / folder / f"{split}.jsonl")
            assert ds[split].num_rows == len(rows)
            assert ds[split].features == features_for(config)
            got = ds[split].to_list()
            assert [r["question"] for r in got] == [r["question"] for r in rows]  # text kept byte for byte
            assert [r["generated"] for r in got] == [r["generated"] for r in rows]
            assert list(stream[split]) == got
            for src, row in zip(rows, got):
                if "type" in row:
                    assert len(row["type"]) == len(row["generated"])
                    if isinstance(src.get("type"), str):  # train quirk: string -> repeated per answer
                        assert row["type"] == [src["type"]] * len(src["generated"])
                    elif "type" in src:
                        assert row["type"] == src["type"]
    zh = load(out, "zh-role_specific", tmp_path / "cache")
    assert set(zh["train"]["role"]) <= {"孙悟空", "皇帝", "华妃", "李白", "张飞"}
    # baseline rows carry no type in the source: copied from the test row of the same question
    test_types = {(r["role"], r["question"]): r["type"][0] for r in zh["test"]}
    assert all(r["type"] == [test_types[(r["role"], r["question"])]] for r in zh["rolegpt_baseline"])


@pytest.fixture
def described_sample(rolebench_sample, tmp_path) -> Path:
    """The real rows plus made-up profiles (the sample has none; verify refuses undescribed roles)."""
    root = shutil.copytree(rolebench_sample, tmp_path / "sample")
    for lang, folder in (("eng", "rolebench-eng"), ("zh", "rolebench-zh")):
        roles = sorted({r["role"] for path in (root / folder).rglob("*.jsonl") for r in jsonl(path)})
        (root / f"profiles-{lang}").mkdir()
        (root / f"profiles-{lang}" / "desc.json").write_text(json.dumps({r: f"{r} (test description)" for r in roles}))
    return root


def test_verify_finds_the_real_train_test_leak_in_the_sample(described_sample, tmp_path):
    # The real Chinese role-specific files ask one question in train and (space-padded) in test.
    build_release(described_sample, "1.0.0", tmp_path / "rel")
    report = verify_release(tmp_path / "rel")
    assert report.problems and all(p.startswith("zh-role_specific: ('皇帝'") for p in report.problems)


def test_drop_train_leaks_makes_the_sample_release_verify(described_sample, tmp_path):
    manifest = build_release(described_sample, "1.0.0", tmp_path / "rel", drop_leaks=True)
    assert manifest["configs"]["zh-role_specific"]["dropped_train_leaks"] == 1
    assert manifest["configs"]["zh-role_specific"]["splits"]["train"]["rows"] == 199
    assert "`zh-role_specific` 1" in (tmp_path / "rel" / "README.md").read_text()
    report = verify_release(tmp_path / "rel")
    assert report.ok, report.problems


def test_build_from_shard_set_loads_every_config_multi_shard_and_streaming(tmp_path):
    source = write_shard_set(tmp_path)
    out = tmp_path / "rel"
    manifest = build_release(source, "1.2.0", out, max_shard_bytes=8_000)
    assert list(manifest["configs"]) == CONFIGS
    assert manifest["source"]["kind"] == "shard-set"
    raw = (source / "v1.2.0" / "manifest.json").read_bytes()
    assert manifest["source"]["manifest_sha256"] == hashlib.sha256(raw).hexdigest()
    assert any(len(s["shards"]) > 1 for c in manifest["configs"].values() for s in c["splits"].values())
    for config in CONFIGS:
        ds = load(out, config, tmp_path / "cache")
        for split, info in manifest["configs"][config]["splits"].items():
            assert ds[split].num_rows == info["rows"]
            assert ds[split].features == features_for(config)
        stream = load(out, config, tmp_path / "cache", streaming=True)
        assert list(stream["train"]) == ds["train"].to_list()
    card = (out / "README.md").read_text()
    assert "gpt-4-0613" in card and "rolegpt_en.txt" in card and "load_dataset(" in card
    raw = load(out, "zh-general", tmp_path / "cache")["raw"]
    assert raw.num_rows == manifest["configs"]["zh-general"]["splits"]["test"]["rows"]
    assert verify_release(out).ok


def test_tampered_shard_set_file_is_refused(tmp_path):
    source = write_shard_set(tmp_path)
    path = source / "v1.2.0" / "rolebench-zh" / "general" / "train.jsonl"
    path.write_text(path.read_text().replace("俺老孙", "我", 1))
    with pytest.raises(ReleaseError, match=r"rolebench-zh/general/train.jsonl: sha256 differs"):
        build_release(source, "1.2.0", tmp_path / "rel")


def test_changelog_keeps_previous_entries(tmp_path):
    source = make_demo_source(tmp_path / "src")
    build_release(source, "0.1.0", tmp_path / "a", notes="First demo.")
    build_release(source, "0.2.0", tmp_path / "b", notes="Rebuilt.", previous_changelog=tmp_path / "a" / "CHANGELOG.md")
    text = (tmp_path / "b" / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n\n## v0.2.0\n\n- Rebuilt.\n")
    assert text.count("# Changelog") == 1 and text.index("## v0.2.0") < text.index("## v0.1.0\n\n- First demo.")


def test_build_twice_is_byte_identical(tmp_path):
    source = make_demo_source(tmp_path / "src")
    build_release(source, "0.3.0", tmp_path / "a", max_shard_bytes=20_000)
    build_release(source, "0.3.0", tmp_path / "b", max_shard_bytes=20_000)
    assert files_of(tmp_path / "a") == files_of(tmp_path / "b")


def test_committed_demo_release_is_reproducible_and_loads(tmp_path):
    assert files_of(make_demo_source(tmp_path / "src")) == {
        k: v for k, v in files_of(DEMO_SOURCE).items() if not k.endswith(".py") and "__pycache__" not in k
    }
    report = verify_release(DEMO_RELEASE)
    assert report.ok, report.problems
    manifest = json.loads((DEMO_RELEASE / "manifest.json").read_text())
    assert (REPO_ROOT / "release" / "versions" / "v0.1.0.json").read_text() == json.dumps(
        manifest, ensure_ascii=False, indent=1
    ) + "\n"
    rebuilt = tmp_path / "rebuilt"
    # the command in make_demo_source.py's docstring
    build_release(DEMO_SOURCE, manifest["version"], rebuilt, repo_id="release/rolebench-demo", name="RoleBench demo")
    same_writer = manifest["build_tool"]["pyarrow"] == pa.__version__
    for config in CONFIGS:
        ds = load(DEMO_RELEASE, config, tmp_path / "cache")
        for split in ds:
            assert ds[split].to_list() == load(rebuilt, config, tmp_path / "cache2")[split].to_list()
    if same_writer:  # Parquet bytes are promised for the writer version the manifest records
        assert files_of(rebuilt) == files_of(DEMO_RELEASE)
    ig = load(DEMO_RELEASE, "eng-instruction_generalization-general", tmp_path / "cache")
    assert len(set(ig["train"]["role"])) >= 4 and all(len(g) == 5 for g in ig["train"]["generated"])


# ---------------------------------------------------------------- verify catches


@pytest.fixture
def demo_build(tmp_path) -> Path:
    out = tmp_path / "rel"
    build_release(make_demo_source(tmp_path / "src"), "0.2.0", out)
    assert verify_release(out).ok
    return out


def _shard(out: Path, config: str, split: str = "train") -> Path:
    return next((out / "data" / config).glob(f"{split}-*.parquet"))


def _rewrite_manifest_entry(out: Path, shard: Path, rows: int | None = None) -> None:
    manifest, split, entry = release_manifest_entry(out, shard)
    entry["sha256"] = hashlib.sha256(shard.read_bytes()).hexdigest()
    if rows is not None:
        entry["rows"] = rows
        split["rows"] = rows
    (out / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")


def test_verify_catches_a_flipped_byte(demo_build, capsys):
    shard = _shard(demo_build, "zh-general")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    assert release.main(["verify", str(demo_build)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert f"{shard}: sha256 differs from manifest.json" in err


def test_verify_catches_a_deleted_row(demo_build):
    shard = _shard(demo_build, "eng-instruction_generalization-general")
    table = pq.read_table(shard)
    pq.write_table(table.slice(1), shard)
    problems = verify_release(demo_build).problems
    assert f"{shard}: sha256 differs from manifest.json" in problems
    assert f"{shard}: {table.num_rows - 1} rows, manifest.json says {table.num_rows}" in problems
    _rewrite_manifest_entry(demo_build, shard)  # even with a re-hashed shard the count gives it away
    problems = verify_release(demo_build).problems
    assert problems == [
        f"{shard}: {table.num_rows - 1} rows, manifest.json says {table.num_rows}",
        f"eng-instruction_generalization-general/train: {table.num_rows - 1} rows readable, "
        f"manifest.json says {table.num_rows}",
    ]


def test_verify_catches_a_planted_train_test_leak(demo_build):
    config = "eng-instruction_generalization-role_specific"
    train, test = _shard(demo_build, config), _shard(demo_build, config, "test")
    leaked = pa.concat_tables([pq.read_table(train), pq.read_table(test).slice(0, 1)])
    pq.write_table(leaked, train)
    _rewrite_manifest_entry(demo_build, train, rows=leaked.num_rows)  # consistent checksums: only the leak remains
    problems = verify_release(demo_build).problems
    role, question = (
        pq.read_table(test).slice(0, 1).to_pylist()[0]["role"],
        pq.read_table(test).to_pylist()[0]["question"],
    )
    assert any(
        p.startswith(f"{config}: ({role!r}, {question.strip()[:60]!r}) is in both train and test") for p in problems
    )


def test_verify_catches_a_held_out_role_in_train(tmp_path):
    source = make_demo_source(tmp_path / "src")
    train = source / "rolebench-eng/role-generalization/general/train.jsonl"
    held = jsonl(source / "rolebench-eng/role-generalization/general/test.jsonl")[0]
    train.write_text(train.read_text() + json.dumps({**held, "question": "Say hello."}) + "\n")
    build_release(source, "0.2.0", tmp_path / "rel")
    problems = verify_release(tmp_path / "rel").problems
    assert f"eng-role_generalization-general: held-out role {held['role']!r} appears in train" in problems


def test_verify_catches_an_edited_card_and_an_unlisted_shard(demo_build):
    (demo_build / "README.md").write_text((demo_build / "README.md").read_text() + "\nedited\n")
    shutil.copy(_shard(demo_build, "zh-general"), demo_build / "data" / "zh-general" / "extra.parquet")
    problems = verify_release(demo_build).problems
    assert any("README.md: sha256 differs" in p for p in problems)
    assert any("extra.parquet: shard not listed" in p for p in problems)


# ---------------------------------------------------------------- publish against a stand-in Hub


class FakeHub:
    """Stand-in for huggingface_hub.HfApi: records calls, holds tags and files. Every call is bound
    against the real HfApi method's signature, so the stand-in cannot drift from the real client."""

    def __init__(self, tags=(), files=(), exists=True):
        self.tags, self.files, self.exists, self.calls = list(tags), list(files), exists, []

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        real = getattr(HfApi, name, None)
        if real is None or not callable(attr):
            return attr

        def checked(*args, **kwargs):
            inspect.signature(real).bind(None, *args, **kwargs)  # TypeError if the real API differs
            return attr(*args, **kwargs)

        return checked

    def list_repo_refs(self, repo_id, repo_type):
        self.calls.append(("list_repo_refs", repo_id, repo_type))
        if not self.exists:
            raise type("RepositoryNotFoundError", (Exception,), {})("404")
        return SimpleNamespace(
            tags=[SimpleNamespace(name=t) for t in self.tags],
            branches=[SimpleNamespace(name="main", target_commit="5eed")],
        )

    def list_repo_files(self, repo_id, repo_type):
        return list(self.files)

    def create_repo(self, repo_id, repo_type, exist_ok):
        self.calls.append(("create_repo", repo_id, repo_type, exist_ok))

    def create_commit(self, repo_id, operations, commit_message, repo_type, parent_commit=None):
        self.calls.append(
            (
                "create_commit",
                repo_id,
                [type(o).__name__ + ":" + o.path_in_repo for o in operations],
                repo_type,
                parent_commit,
            )
        )
        return SimpleNamespace(oid="c0ffee")

    def create_tag(self, repo_id, tag, revision, repo_type, tag_message):
        self.calls.append(("create_tag", repo_id, tag, revision, repo_type))


def test_publish_one_commit_then_tag_and_records_version(demo_build, tmp_path):
    hub = FakeHub(files=[".gitattributes", "README.md", "data/old-config/train-00000-of-00001.parquet"])
    plan = publish(demo_build, "me/rolebench", api=hub, versions_dir=tmp_path / "versions")
    names = [c[0] for c in hub.calls]
    assert names == ["list_repo_refs", "create_repo", "create_commit", "create_tag"]
    commit = hub.calls[2]
    files = sorted(p.relative_to(demo_build).as_posix() for p in demo_build.rglob("*") if p.is_file())
    assert commit[2] == [f"CommitOperationAdd:{f}" for f in files] + [
        "CommitOperationDelete:data/old-config/train-00000-of-00001.parquet"
    ]
    assert commit[4] == "5eed"  # committed on top of the head the plan saw
    assert hub.calls[3] == ("create_tag", "me/rolebench", "v0.2.0", "c0ffee", "dataset")
    assert hub.calls[1] == ("create_repo", "me/rolebench", "dataset", True)
    assert (tmp_path / "versions" / "v0.2.0.json").read_bytes() == (demo_build / "manifest.json").read_bytes()
    assert plan.deletions == ["data/old-config/train-00000-of-00001.parquet"]


def test_publish_refuses_an_existing_tag(demo_build, tmp_path):
    hub = FakeHub(tags=["v0.1.0", "v0.2.0"])
    with pytest.raises(ReleaseError, match="tag v0.2.0 already exists"):
        publish(demo_build, "me/rolebench", api=hub, versions_dir=tmp_path / "versions")
    assert [c[0] for c in hub.calls] == ["list_repo_refs"]
    assert not (tmp_path / "versions").exists()


def test_publish_refuses_when_a_different_manifest_is_recorded(demo_build, tmp_path):
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "v0.2.0.json").write_text("{}")
    hub = FakeHub()
    with pytest.raises(ReleaseError, match="a different manifest is already recorded for v0.2.0"):
        publish(demo_build, "me/rolebench", api=hub, versions_dir=tmp_path / "versions")
    assert "create_commit" not in [c[0] for c in hub.calls]


def test_publish_creates_a_missing_repo_and_refuses_an_unverified_folder(demo_build, tmp_path):
    plan = plan_publish(demo_build, "me/rolebench", FakeHub(exists=False))
    assert plan.repo_exists is False and plan.deletions == []
    _shard(demo_build, "zh-general").write_bytes(b"not parquet")
    hub = FakeHub()
    with pytest.raises(ReleaseError, match="verify failed"):
        publish(demo_build, "me/rolebench", api=hub, versions_dir=None)
    assert hub.calls == []


class UnreachableHub(FakeHub):
    def list_repo_refs(self, repo_id, repo_type):
        raise ConnectionError("[Errno -2] Name or service not known\nsecond line of a long trace")


class FailingCommitHub(FakeHub):
    def create_commit(self, repo_id, operations, commit_message, repo_type, parent_commit=None):
        raise TimeoutError("The write operation timed out")


def test_publish_hub_failures_are_one_line_errors(demo_build, tmp_path):
    with pytest.raises(ReleaseError) as err:
        publish(demo_build, "me/rolebench", api=UnreachableHub(), versions_dir=tmp_path / "versions")
    assert str(err.value) == (
        "datasets/me/rolebench: reading the repository failed (ConnectionError: [Errno -2] Name or "
        "service not known); nothing was uploaded"
    )
    hub = FailingCommitHub()
    with pytest.raises(
        ReleaseError,
        match=r"publishing failed \(TimeoutError: The write operation timed out\); "
        r"v0.2.0 is not tagged: run publish again$",
    ):
        publish(demo_build, "me/rolebench", api=hub, versions_dir=tmp_path / "versions")
    assert "create_tag" not in [c[0] for c in hub.calls] and not (tmp_path / "versions").exists()


def test_publish_dry_run_prints_the_plan_never_the_token(demo_build, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETtoken123")
    assert release.main(["publish", str(demo_build), "--repo", "me/rolebench", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "hf_SECRETtoken123" not in out.out + out.err
    assert "tag: v0.2.0" in out.out and "upload manifest.json" in out.out
    assert "upload data/zh-general/train-00000-of-00001.parquet" in out.out


def test_publish_without_token_is_a_clear_error(demo_build, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert release.main(["publish", str(demo_build), "--repo", "me/rolebench"]) == 1
    assert (
        capsys.readouterr().err.strip()
        == "error: HF_TOKEN is not set (publishing needs a write token in the environment)"
    )


# ---------------------------------------------------------------- bad input


def _source_with(tmp_path: Path, rel: str, line: str) -> Path:
    source = make_demo_source(tmp_path / "src")
    path = source / rel
    path.write_text(path.read_text() + line + "\n")
    return source


def test_row_missing_a_key_names_file_and_line(tmp_path, capsys):
    rel = "rolebench-eng/instruction-generalization/general/train.jsonl"
    source = _source_with(tmp_path, rel, json.dumps({"role": "Hamlet", "generated": ["Ay."]}))
    lines = len((source / rel).read_text().splitlines())
    assert release.main(["build", "--from", str(source), "--version", "1.0.0", "--out", str(tmp_path / "rel")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {rel}:{lines}: missing 'question'"


def test_mixed_languages_in_a_config_are_reported(tmp_path):
    rel = "rolebench-eng/instruction-generalization/general/test.jsonl"
    source = _source_with(
        tmp_path,
        rel,
        json.dumps({"role": "Hamlet", "question": "你好吗？", "generated": ["我很好，谢谢。"]}, ensure_ascii=False),
    )
    with pytest.raises(
        ReleaseError,
        match=r"test.jsonl:\d+: Chinese row in English config eng-instruction_generalization-general "
        r"\(mixed languages\)",
    ):
        build_release(source, "1.0.0", tmp_path / "rel")


def test_type_not_aligned_with_generated_is_reported(tmp_path):
    rel = "rolebench-zh/role_specific/test.jsonl"
    row = {"role": "李白", "question": "你好？", "generated": ["吾甚好。", "好。"], "type": ["script_based"]}
    source = _source_with(tmp_path, rel, json.dumps(row, ensure_ascii=False))
    with pytest.raises(ReleaseError, match=r"'type' has 1 items but 'generated' has 2"):
        build_release(source, "1.0.0", tmp_path / "rel")


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0-rc1", "01.2.3"])
def test_non_semver_version_is_refused(tmp_path, version, capsys):
    assert (
        release.main(["build", "--from", str(DEMO_SOURCE), "--version", version, "--out", str(tmp_path / "rel")]) == 1
    )
    assert capsys.readouterr().err.strip() == f"error: version {version!r} is not semver X.Y.Z (e.g. 1.0.0)"
    assert not (tmp_path / "rel").exists()


def test_cli_module_verifies_the_committed_demo():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "data_gen.release", "verify", str(DEMO_RELEASE)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"{DEMO_RELEASE}: OK")
    assert "eng-instruction_generalization-general: 0 of 24 test instructions also in train" in result.stdout


def test_python_m_data_gen_release_dispatches_here(capsys):
    from data_gen.__main__ import main as data_gen_main

    assert data_gen_main(["release", "verify", str(DEMO_RELEASE)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{DEMO_RELEASE}: OK")


def test_release_of_a_real_data_gen_shard_set(tmp_path, monkeypatch):
    """End to end: data_gen build (against the local fake OpenAI server) -> release build -> verify -> load."""
    from data_gen.__main__ import main as data_gen_main
    from tests.data_gen.test_pipeline import build_args
    from tests.helpers.fake_openai_server import FakeOpenAIServer, rolebench_responder

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    with FakeOpenAIServer(rolebench_responder) as srv:
        assert data_gen_main(build_args(srv.base_url, tmp_path / "work", tmp_path / "shards", "0.4.0")) == 0
    out = tmp_path / "rel"
    assert (
        data_gen_main(["release", "build", "--from", str(tmp_path / "shards"), "--version", "0.4.0", "--out", str(out)])
        == 0
    )
    assert verify_release(out).ok
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "shard-set"
    shard_manifest = (tmp_path / "shards" / "v0.4.0" / "manifest.json").read_bytes()
    assert manifest["source"]["manifest_sha256"] == hashlib.sha256(shard_manifest).hexdigest()
    card = (out / "README.md").read_text()
    assert "fake-model" in card and "role_system_en.txt" in card
    for config, info in manifest["configs"].items():
        ds = load(out, config, tmp_path / "cache")
        assert {split: ds[split].num_rows for split in ds} == {s: i["rows"] for s, i in info["splits"].items()}
        assert all(ds[split].features == features_for(config) for split in ds)


def test_profiles_map_data_gen_file_names_back_to_roles(tmp_path):
    from data_gen.release.layout import load_source

    folder = tmp_path / "src" / "profiles-eng"
    folder.mkdir(parents=True)
    (folder / "desc.json").write_text(json.dumps({"Jekyll/Hyde": "You are two men in one."}))
    (folder / "profiles-eng-Jekyll_Hyde.jsonl").write_text(
        json.dumps({"act_id": 0, "diag_id": "1", "role": "Utterson", "content": "Who are you?"}) + "\n"
    )
    source = load_source(tmp_path / "src", "1.0.0")
    assert source.configs["dialogues-eng"]["train"].columns == {
        "role": ["Jekyll/Hyde"],
        "act_id": [0],
        "diag_id": [1],
        "speaker": ["Utterson"],
        "content": ["Who are you?"],
    }
    (folder / "profiles-eng-Jekyll_Hyde.jsonl").write_text(
        json.dumps({"act_id": "x", "diag_id": 1, "role": "U", "content": "?"}) + "\n"
    )
    with pytest.raises(
        ReleaseError, match=r"profiles-eng/profiles-eng-Jekyll_Hyde.jsonl:1: 'act_id' must be an integer"
    ):
        load_source(tmp_path / "src", "1.0.0")
