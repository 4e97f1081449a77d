"""python -m rolellm_jax.serve: refuses an open host without a key before loading anything; serves
a saved checkpoint, its roles and character cards to the openai client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import openai
from flax import nnx

from rolellm_jax import serve
from rolellm_jax.checkpoints.model_folder import save_model_checkpoint
from rolellm_jax.errors import EXIT_USER_ERROR
from tests.helpers.card_fixtures import write_card_folder
from tests.helpers.rolebench_fixtures import DESC_ENG, write_original_layout
from tests.helpers.serving_fixtures import tiny_serving_model


def test_open_host_without_key_is_refused(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ROLELLM_API_KEY", raising=False)
    assert serve.main(["--ckpt", str(tmp_path / "none"), "--host", "0.0.0.0"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "--host 0.0.0.0: serving beyond this machine needs --api-key" in err and "Traceback" not in err


def test_serves_a_saved_checkpoint_and_its_roles(tmp_path) -> None:
    model, tokenizer = tiny_serving_model()
    tokenizer.save_pretrained(tmp_path / "tok")
    save_model_checkpoint(tmp_path / "ckpt", nnx.to_pure_dict(nnx.state(model, nnx.Param)), model.cfg, tmp_path / "tok")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    args = ["--ckpt", str(tmp_path / "ckpt"), "--profiles", str(write_original_layout(tmp_path / "rb"))]
    write_card_folder(tmp_path / "cards")
    args += [
        "--cards",
        str(tmp_path / "cards"),
        "--port",
        str(port),
        "--max-len",
        "640",
        "--slots",
        "2",
        "--no-warmup",
        "--api-key",
        "k1",
    ]
    env = dict(os.environ, ROLELLM_API_KEY="")
    proc = subprocess.Popen([sys.executable, "-m", "rolellm_jax.serve", *args], env=env, stderr=subprocess.PIPE)
    try:
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k1", max_retries=0)
        deadline = time.monotonic() + 120
        while True:
            try:
                ids = [m.id for m in c.models.list()]
                break
            except openai.APIConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
                time.sleep(0.5)
        assert ids == ["ckpt", *DESC_ENG, "剑客", "Mira", "Old Tam Card"]
        reply = c.chat.completions.create(
            model="Doctor Moss", messages=[{"role": "user", "content": "Hello?"}], max_tokens=4, temperature=0
        )
        assert reply.usage.completion_tokens <= 4 and reply.model == "Doctor Moss"
    finally:
        proc.terminate()
        proc.wait(30)
