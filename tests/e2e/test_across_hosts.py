"""Two racks on two hosts: network namespaces this test makes, joined by one veth pair on a
private /30, each with its own Docker engine (its pushes and pulls leave from its host).
Each rack listens on its host's address and advertises it; its registry then serves TLS
with a certificate from the rack's CA and requires credentials. A build moves from one rack
to the other with `builds copy` (only the layers the other lacks) and with
`export | import`, and the copy is pulled with `docker pull` after `docker login` with what
`slipway rack registry` says, and run.

Both racks run on SQLite: a host reaches nothing but the other host (the machine's
PostgreSQL included), so this module is not part of the PostgreSQL pass."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.cli.localrack.registry import ENGINE_CERTS
from tests.e2e import hosts as hosts_module
from tests.e2e.conftest import SLIPWAY
from tests.e2e.hosts import Engine, Host, start_engine
from tests.helpers import build_id_of, write_files

pytestmark = pytest.mark.docker

PORT = 27400  # each host has its own ports: the same base on both
MOVED = re.compile(r"moved (\d+) of (\d+) blobs")

two_hosts = hosts_module.two_hosts


@dataclass
class HostRack:
    """A rack started inside one host, and the `slipway` command run there."""

    name: str
    host: Host
    engine: Engine
    data: Path
    env: dict[str, str]

    @property
    def front(self) -> str:
        return f"{self.host.address}:{PORT}"

    @property
    def registry(self) -> str:
        return f"{self.host.address}:{PORT + 4}"

    def slipway(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.host.run(
            [SLIPWAY, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            input=input,
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.slipway(*args)
        assert done.returncode == 0, f"slipway {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        return done


@pytest.fixture
def racks(two_hosts: list[Host], tmp_path: Path) -> Iterator[tuple[HostRack, HostRack]]:
    home = tmp_path / "home"
    started: list[HostRack] = []
    with start_engine(two_hosts[0]) as engine_a, start_engine(two_hosts[1]) as engine_b:
        try:
            for label, host, engine in (
                ("a", two_hosts[0], engine_a),
                ("b", two_hosts[1], engine_b),
            ):
                env = {k: v for k, v in os.environ.items() if not k.startswith("SLIPWAY_")}
                env.update(
                    XDG_CONFIG_HOME=str(home / "config"),
                    XDG_DATA_HOME=str(home / "data"),
                    DOCKER_HOST=engine.docker_host,
                    DOCKER_CONFIG=str(tmp_path / f"docker-{label}"),
                )
                rack = HostRack(f"host{label}", host, engine, tmp_path / f"rack-{label}", env)
                rack.ok(
                    "rack", "start", "--name", rack.name, "--port", str(PORT),
                    "--data", str(rack.data),
                    "--listen", host.address, "--advertise", host.address,
                )  # fmt: skip
                started.append(rack)
            yield started[0], started[1]
        finally:
            for rack in started:
                rack.slipway("rack", "stop", "--name", rack.name)
                shutil.rmtree(ENGINE_CERTS / rack.registry, ignore_errors=True)


def _app(folder: Path, marker: str) -> Path:
    return write_files(
        folder,
        {
            "Dockerfile": f"FROM busybox\nRUN echo {marker} > /marker\n",
            "convox.yml": "services:\n  web:\n    build: .\n",
        },
    )


STATUS = """
import ssl, sys, urllib.error, urllib.request
context = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else None
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=20, context=context).status)
except urllib.error.HTTPError as err:
    print(err.code)
"""


def _status(host: Host, url: str, ca: Path | None = None) -> str:
    """The HTTP status `url` answers a request from inside `host` with, no credentials."""
    argv = [sys.executable, "-c", STATUS, url, *([str(ca)] if ca else [])]
    done = host.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _moved(stderr: str) -> tuple[int, int]:
    found = MOVED.search(stderr)
    assert found, stderr
    return int(found.group(1)), int(found.group(2))


def test_builds_move_between_racks_on_two_hosts(
    racks: tuple[HostRack, HostRack], tmp_path: Path
) -> None:
    a, b = racks
    app = f"across-{secrets.token_hex(3)}"

    # Each rack announces its advertised address, and its registry speaks TLS alone.
    info = a.host.run(
        [
            sys.executable, "-c",
            "import json,sys;from client.api.rack import Rack;"
            "r=Rack.connect(sys.argv[1],sys.argv[2],open(sys.argv[3],'rb').read());"
            "i=r.builder.rack();print(json.dumps([i.archive_address,i.metadata_address,"
            "i.registry_address,i.registry_host]))",
            b.front, (b.data / "token").read_text().strip(), str(b.data / "tls" / "ca.pem"),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert info.returncode == 0, info.stderr
    host_b = b.host.address
    assert json.loads(info.stdout) == [
        f"{host_b}:{PORT + 1}",
        f"{host_b}:{PORT + 2}",
        f"{host_b}:{PORT + 3}",
        f"{host_b}:{PORT + 4}",
    ]
    assert _status(a.host, f"https://{b.registry}/v2/", b.data / "tls" / "ca.pem") == "401"
    # Go's TLS server answers plain HTTP with 400.
    assert _status(a.host, f"http://{b.registry}/v2/") == "400"

    # Two builds on rack a sharing their base layer.
    a.ok("apps", "create", app, "-r", a.name)
    first = build_id_of(
        a.ok("build", str(_app(tmp_path / "one", "one")), "-a", app, "-r", a.name).stdout
    )
    second = build_id_of(
        a.ok("build", str(_app(tmp_path / "two", "two")), "-a", app, "-r", a.name).stdout
    )

    # From host a, the client logs in to rack b as a remote rack, trusting its CA.
    token_b = (b.data / "token").read_text().strip()
    a.ok(
        "login", b.front, "--name", "remote-b", "--token", token_b,
        "--ca", str(b.data / "tls" / "ca.pem"),
    )  # fmt: skip

    # The copies go to the app of the same name, which rack b must have.
    a.ok("apps", "create", app, "-r", "remote-b")
    copied = a.ok("builds", "copy", first, "-a", app, "-r", a.name, "--to", "remote-b", "--id")
    moved, blobs = _moved(copied.stderr)
    assert moved == blobs > 0, copied.stderr
    copied_release = copied.stdout.strip()
    again = a.ok("builds", "copy", second, "-a", app, "-r", a.name, "--to", "remote-b")
    moved, blobs = _moved(again.stderr)
    # The base layer is on rack b already: only the new layer, config and none else.
    assert 0 < moved < blobs, again.stderr

    listing = a.ok("builds", "-a", app, "-r", "remote-b").stdout.splitlines()[1:]
    assert len(listing) == 2 and all(line.split()[1] == "complete" for line in listing)
    first_copy = next(line.split()[0] for line in listing if line.split()[2] == copied_release)

    # export | import, from rack a to rack b, through this host's client.
    target = f"{app}-imported"
    a.ok("apps", "create", target, "-r", "remote-b")
    pipe = (
        f"{shlex.quote(SLIPWAY)} builds export {second} -a {app} -r {a.name} | "
        f"{shlex.quote(SLIPWAY)} builds import -a {target} -r remote-b --id"
    )
    imported = a.host.pipeline(pipe, a.env)
    assert imported.returncode == 0, imported.stderr
    imported_listing = a.ok("builds", "-a", target, "-r", "remote-b").stdout.splitlines()[1:]
    assert len(imported_listing) == 1
    assert imported_listing[0].split()[2] == imported.stdout.strip()

    # On host b, with b's engine: docker login with rack registry's credentials, pull, run.
    shown = b.ok("rack", "registry", "--name", b.name).stdout.splitlines()
    assert shown == [f"Address   {b.registry}", "Username  slipway"]
    password = b.ok("rack", "registry", "--name", b.name, "--password").stdout
    reference = f"{b.registry}/{app}:web.{first_copy}"
    refused = b.engine.docker("pull", reference)
    assert refused.returncode != 0  # not logged in yet
    b.engine.docker_ok("login", b.registry, "-u", "slipway", "--password-stdin", input=password)
    b.engine.docker_ok("pull", reference)
    assert b.engine.docker_ok("run", "--rm", reference, "cat", "/marker").strip() == "one"
    imported_id = imported_listing[0].split()[0]
    imported_ref = f"{b.registry}/{target}:web.{imported_id}"
    b.engine.docker_ok("pull", imported_ref)
    assert b.engine.docker_ok("run", "--rm", imported_ref, "cat", "/marker").strip() == "two"
