"""`python -m services.metadata` as a process: starts, serves, stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.api.channel import open_channel
from client.api.metadata import MetadataClient
from tests.helpers import eventually, free_port
from tests.tls import ca, tls_channel, tls_env


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}
    env.update(tls_env())
    env.update(extra)
    return env


def _serving(address: str) -> bool:
    with tls_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def test_main_serves_until_sigterm(token: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = _env(SLIPWAY_TOKEN=token)
    log_path = tmp_path / "metadata.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.metadata",
                "--listen",
                address,
                "--data",
                str(tmp_path / "data"),
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        eventually(lambda: _serving(address), timeout=30)
        with open_channel(address, token, ca=ca()) as channel:
            assert MetadataClient(channel, address).create_app("web").name == "web"
        assert (tmp_path / "data" / "metadata.db").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log_path.read_text()


def test_main_without_a_token_exits_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.metadata"], env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "SLIPWAY_TOKEN is required" in done.stderr


def test_main_with_an_unreachable_database_says_so_in_one_line() -> None:
    url = "postgresql://postgres@127.0.0.1:1/nothing"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.metadata",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--database",
            url,
        ],
        env=_env(SLIPWAY_TOKEN="t"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cannot open the database at" in errors[0] and url in errors[0]
