"""Runs whose checkpoints, export and base model live in a gs:// bucket, as on a TPU pod.

The bucket is a local Cloud Storage emulator (gcp-storage-emulator): gcsfs (our file operations,
through etils.epath) and tensorstore (orbax's arrays) both speak to it over HTTP, so these are the
code paths a real bucket takes, minus Google's servers.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

pytest.importorskip("gcsfs", reason="gcsfs is not installed (the test extra)")
emulator = pytest.importorskip(
    "gcp_storage_emulator.server", reason="gcp-storage-emulator is not installed (the test extra)"
)

import fsspec  # noqa: E402
from etils import epath  # noqa: E402

from rolellm_jax.checkpoints.model_folder import load_model_checkpoint  # noqa: E402
from rolellm_jax.convert import main as convert_main  # noqa: E402
from rolellm_jax.training.run import run  # noqa: E402
from rolellm_jax.training.run_config import parse_args  # noqa: E402
from tests.training.test_train import assert_trees_equal, tiny_args, tokenizer_dir  # noqa: E402,F401 (a fixture)

BUCKET = "rolellm-test"


def _with_generation_header(download):
    """The emulator leaves out the x-goog-generation header of a read, which tensorstore needs (it
    tracks every object's generation); real Cloud Storage sends it."""

    def wrapped(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except Exception:  # noqa: BLE001 - a missing object: the 404 is already set
            return
        response["x-goog-generation"] = str(obj["generation"])

    return wrapped


@pytest.fixture(scope="module")
def bucket():
    objects = pytest.importorskip("gcp_storage_emulator.handlers.objects")
    download = objects.download
    objects.download = _with_generation_header(download)  # what objects.get (alt=media) calls
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test-token",
    }  # tensorstore
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield f"gs://{BUCKET}"
    finally:
        server.stop()
        objects.download = download
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_checkpoints_resume_and_export_in_a_bucket(bucket, tokenizer_dir, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a URL taken for a local path would show up here as gs:/...
    straight, _ = parse_args(tiny_args(tokenizer_dir, tmp_path / "straight", "--train.steps=6"))
    run(straight)

    run_url = f"{bucket}/runs/tiny"
    args = tiny_args(
        tokenizer_dir, tmp_path / "local", f"--checkpoint.dir={run_url}/checkpoints", "--checkpoint.every=2"
    )
    first, _ = parse_args([*args, "--train.steps=4", "--train.export=false"])
    run(first)
    assert sorted(p.name for p in epath.Path(f"{run_url}/checkpoints").iterdir()) == ["2", "4"]
    assert not (tmp_path / "gs:").exists() and not (tmp_path / "local" / "checkpoints").exists()

    # damage the newest checkpoint in the bucket: skipped, set aside there, resumed from step 2
    gcs = fsspec.filesystem("gs")
    for name in gcs.find(f"{run_url}/checkpoints/4/state"):
        gcs.pipe_file(name, b"\0garbage")
    # the resumed run goes on to step 6: a changed train.steps is refused unless allowed (issue 16)
    again, _ = parse_args([*args, "--train.steps=6", "--resume.allow_changes=true"])
    with caplog.at_level(logging.INFO):
        result = run(again)
    assert any(f"resumed from {run_url}/checkpoints/2" in r.getMessage() for r in caplog.records)
    assert result.steps_run == 4
    assert sorted(p.name.split("-")[0] for p in epath.Path(f"{run_url}/checkpoints-corrupt").iterdir()) == [
        "4",
        "README.txt",
    ]
    assert str(result.export_dir) == f"{run_url}/export" and str(result.loss_curve) == f"{run_url}/loss_curve.png"
    assert epath.Path(f"{run_url}/loss_curve.png").read_bytes().startswith(b"\x89PNG")

    exported, _ = load_model_checkpoint(f"{run_url}/export")
    local, _ = load_model_checkpoint(tmp_path / "straight" / "export")
    assert_trees_equal(exported, local)  # same run, same parameters, wherever it was kept

    # the bucket export converts to a local Hugging Face folder, tokenizer included
    assert convert_main(["jax-to-hf", "--ckpt", f"{run_url}/export", "--out", str(tmp_path / "hf")]) == 0
    assert (
        convert_main(
            ["jax-to-hf", "--ckpt", str(tmp_path / "straight" / "export"), "--out", str(tmp_path / "hf-local")]
        )
        == 0
    )
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (tmp_path / "hf" / name).read_bytes() == (tmp_path / "hf-local" / name).read_bytes(), name

    # and back into the bucket as a base model that a new run starts from (tokenizer read from there too)
    model_url = f"{bucket}/models/tiny"
    assert convert_main(["hf-to-jax", "--hf", str(tmp_path / "hf"), "--out", model_url]) == 0
    tuned, _ = parse_args(
        tiny_args(
            tokenizer_dir,
            tmp_path / "tuned",
            f"--model.init={model_url}",
            "--model.tokenizer=null",
            "--train.steps=1",
            "--train.lr=0",
        )
    )
    assert run(tuned).steps_run == 1
    start, _ = load_model_checkpoint(tmp_path / "tuned" / "export")
    assert_trees_equal(start, local)  # lr 0: the run started from the bucket's parameters


def test_hugging_face_folder_in_a_bucket_is_refused_in_one_line(bucket, tokenizer_dir, tmp_path, capsys):
    from rolellm_jax.train import main as train_main

    assert train_main(tiny_args(tokenizer_dir, tmp_path, f"--model.init={bucket}/nothing-here")) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: model.init={bucket}/nothing-here: no rolellm_config.json there; a bucket must hold our "
        "checkpoint (python -m rolellm_jax.convert hf-to-jax --hf HF_FOLDER --out URL)"
    )
    assert not Path("gs:").exists()
