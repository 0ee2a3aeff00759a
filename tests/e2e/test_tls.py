"""Every gRPC port of a running rack speaks TLS alone, its certificates from the rack's own
CA: a plaintext client is refused on each, a client trusting another CA gets one clear
error, and `slipway login --ca` with the rack's CA works. The rack registry hands its
credentials out through `slipway rack registry` and refuses anyone without them."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.cli.localrack.tls import Authority
from tests.e2e.conftest import RackHandle

pytestmark = pytest.mark.docker

# builder-1, archive, metadata, registry service (the registry itself is base + 4).
PARTS = {"builder": 0, "archive": 1, "metadata": 2, "registry": 3}


def _check(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    except grpc.RpcError as err:
        return err.code()  # type: ignore[attr-defined,no-any-return]
    finally:
        channel.close()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


def _other_ca(tmp_path: Path) -> Path:
    other = Authority(tmp_path / "other", "other")
    other.ensure()
    return other.ca_file


@pytest.mark.parametrize("part", list(PARTS))
def test_every_port_refuses_plaintext_and_serves_tls_from_the_rack_ca(
    rack: RackHandle, part: str, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{rack.port + PARTS[part]}"
    assert _check(grpc.insecure_channel(address)) == grpc.StatusCode.UNAVAILABLE
    trusted = grpc.ssl_channel_credentials(root_certificates=rack.ca)
    assert _check(grpc.secure_channel(address, trusted)) == grpc.StatusCode.OK
    stranger = grpc.ssl_channel_credentials(root_certificates=_other_ca(tmp_path).read_bytes())
    assert _check(grpc.secure_channel(address, stranger)) == grpc.StatusCode.UNAVAILABLE


def test_a_client_trusting_another_ca_is_refused_in_one_line(
    rack: RackHandle, tmp_path: Path
) -> None:
    address = f"127.0.0.1:{rack.port}"
    token = (rack.data / "token").read_text().strip()
    config = Path(rack.env["XDG_CONFIG_HOME"]) / "slipway" / "config.json"
    before = config.read_text()
    refused = rack.slipway(
        "login", address, "--name", "impostor", "--token", token, "--ca", str(_other_ca(tmp_path))
    )
    assert refused.code == 1
    assert refused.err.strip().splitlines()[-1] == (
        f"ERROR: cannot verify rack at {address}: "
        "its certificate is not signed by the CA this client trusts"
    )
    assert "Traceback" not in refused.err and "SSL" not in refused.err
    assert config.read_text() == before  # nothing recorded
    # The same through SLIPWAY_CA, for the configured rack.
    env = dict(rack.env, SLIPWAY_CA=str(_other_ca(tmp_path)))
    proc = subprocess.run(
        [*rack_command(rack), "builds", "-a", "anything"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"ERROR: cannot verify rack at {rack_host(rack)}: "
        "its certificate is not signed by the CA this client trusts"
    )


def test_a_certificate_that_does_not_name_the_address_is_refused(
    rack: RackHandle, tmp_path: Path
) -> None:
    token = (rack.data / "token").read_text().strip()
    # The rack's certificates name 127.0.0.1 and localhost, not this machine's host name,
    # which reaches the same port.
    name = socket.gethostname()
    assert name != "localhost" and socket.gethostbyname(name).startswith("127."), name
    address = f"{name}:{rack.port}"
    ca = rack.data / "tls" / "ca.pem"
    refused = rack.slipway(
        "login", address, "--name", "wrongname", "--token", token, "--ca", str(ca)
    )
    assert refused.code == 1
    assert refused.err.strip().splitlines()[-1] == (
        f"ERROR: cannot verify rack at {address}: its certificate does not name {name}"
    )


def test_login_with_the_rack_ca_records_it(rack: RackHandle) -> None:
    address = f"localhost:{rack.port}"
    token = (rack.data / "token").read_text().strip()
    ca = rack.data / "tls" / "ca.pem"
    try:
        rack.ok("login", address, "--name", "viaca", "--token", token, "--ca", str(ca))
        config = json.loads(
            (Path(rack.env["XDG_CONFIG_HOME"]) / "slipway" / "config.json").read_text()
        )
        assert config["racks"]["viaca"]["ca"] == ca.read_text()
        rack.ok("apps", "create", "viaca-app", "-r", "viaca")
        rack.ok("env", "set", "K=v", "-a", "viaca-app", "-r", "viaca")
        assert rack.ok("env", "-a", "viaca-app").strip() == "K=v"  # the same rack
        without = rack.slipway("login", address, "--name", "noca", "--token", token)
        assert without.code == 1 and "cannot verify rack at" in without.err
    finally:
        rack.ok("switch", rack.name)


def test_rack_registry_hands_out_what_docker_login_needs(rack: RackHandle) -> None:
    shown = rack.ok("rack", "registry", "--name", rack.name).splitlines()
    assert shown == [f"Address   {rack.registry}", "Username  slipway"]
    password = rack.ok("rack", "registry", "--name", rack.name, "--password")
    assert password.strip() == rack.registry_auth["password"]
    assert password.count("\n") == 1
    done = subprocess.run(
        ["docker", "login", rack.registry, "-u", "slipway", "--password-stdin"],
        input=password,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    wrong = subprocess.run(
        ["docker", "login", rack.registry, "-u", "slipway", "--password-stdin"],
        input="not-the-password\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode != 0
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"http://{rack.registry}/v2/", timeout=10)
    assert anonymous.value.code == 401


def rack_command(rack: RackHandle) -> list[str]:
    from tests.e2e.conftest import SLIPWAY

    return [SLIPWAY, "-r", rack.name]


def rack_host(rack: RackHandle) -> str:
    config = json.loads((Path(rack.env["XDG_CONFIG_HOME"]) / "slipway" / "config.json").read_text())
    return str(config["racks"][rack.name]["host"])
