"""A real local rack for end-to-end tests, started the way `make up` does: through the
`slipway` command, on the real Docker engine, a real registry and SQLite, or PostgreSQL
when SLIPWAY_E2E_DATABASE=postgresql (`make test` runs the suite both ways; each run gets a
fresh database of its own)."""

from __future__ import annotations

import base64
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import eventually, remove_images_of

SLIPWAY = str(Path(sys.executable).parent / "slipway")


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class RackHandle:
    """A running test rack and a way to drive it with the `slipway` command."""

    name: str
    port: int
    data: Path
    env: dict[str, str]
    #: The PostgreSQL URL it runs on; empty for SQLite.
    database: str = ""

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.port + 4}"

    @property
    def ca(self) -> bytes:
        """The rack's certificate authority (PEM), as `slipway rack start` wrote it."""
        return (self.data / "tls" / "ca.pem").read_bytes()

    @property
    def registry_auth(self) -> dict[str, str]:
        """The rack registry's credentials, as the rack wrote them at start."""
        user, _, password = (self.data / "registry.auth").read_text().strip().partition(":")
        return {"username": user, "password": password}

    def registry_request(self, path: str, **headers: str) -> urllib.request.Request:
        """A request to the rack registry's API (`/v2/<path>`) carrying its credentials."""
        auth = self.registry_auth
        pair = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
        return urllib.request.Request(f"http://{self.registry}/v2/{path}", headers=headers)

    def slipway(
        self, *args: str, cwd: Path | None = None, timeout: float = 300, input: str | None = None
    ) -> Result:
        proc = subprocess.run(
            [SLIPWAY, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, cwd: Path | None = None) -> str:
        res = self.slipway(*args, cwd=cwd)
        assert res.code == 0, f"slipway {' '.join(args)} failed ({res.code}):\n{res.out}\n{res.err}"
        assert "Traceback" not in res.err
        return res.out

    def apps(self, *args: str) -> list[str]:
        """The names of the apps `slipway apps --json` lists (`args`: e.g. `-r NAME`)."""
        return [app["name"] for app in json.loads(self.ok("apps", "--json", *args))]


def missing_app(name: str) -> str:
    """The error of a command naming an app that does not exist (nothing creates one)."""
    return f"ERROR: app not found: {name} (create it with: slipway apps create {name})"


def _free_block(size: int = 5) -> int:
    """A base port whose `size` consecutive ports are all free."""
    for _ in range(200):
        base = random.randint(20000, 40000)
        try:
            for port in range(base, base + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")


@dataclass(frozen=True)
class ClientHome:
    """One user's home for the whole session: both test racks are in its client config."""

    home: Path
    env: dict[str, str]


@pytest.fixture(scope="session")
def client_home(tmp_path_factory: pytest.TempPathFactory) -> ClientHome:
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ)
    env.update(
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
    )
    for var in ("SLIPWAY_RACK", "SLIPWAY_HOST", "SLIPWAY_TOKEN"):
        env.pop(var, None)
    return ClientHome(home, env)


def _login(handle: RackHandle, docker_client) -> None:  # type: ignore[no-untyped-def]
    """Logs the SDK client and the `docker` command (through this session's own
    DOCKER_CONFIG) in to the rack's registry, which refuses anonymous requests."""
    docker_client.login(registry=handle.registry, **handle.registry_auth)
    auth = handle.registry_auth
    done = subprocess.run(
        ["docker", "login", handle.registry, "-u", auth["username"], "--password-stdin"],
        input=auth["password"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session", autouse=True)
def docker_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A `docker` CLI configuration of this session's own, so logging in to test racks
    never touches the user's ~/.docker."""
    folder = tmp_path_factory.mktemp("docker-config")
    before = os.environ.get("DOCKER_CONFIG")
    os.environ["DOCKER_CONFIG"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("DOCKER_CONFIG", None)
    else:
        os.environ["DOCKER_CONFIG"] = before


ON_POSTGRES = os.environ.get("SLIPWAY_E2E_DATABASE", "").lower() in ("postgres", "postgresql")


@pytest.fixture(scope="session")
def e2e_database(request: pytest.FixtureRequest) -> str:
    """The database URL the test racks run on: empty for SQLite (the default)."""
    return str(request.getfixturevalue("fresh_database")) if ON_POSTGRES else ""


def _start(handle: RackHandle, *options: str) -> None:
    started = handle.slipway(
        "rack",
        "start",
        "--name",
        handle.name,
        "--port",
        str(handle.port),
        "--data",
        str(handle.data),
        *options,
        timeout=180,
    )
    assert started.code == 0, f"rack start failed:\n{started.out}\n{started.err}"


@pytest.fixture(scope="session")
def rack(docker_client, client_home: ClientHome, e2e_database: str) -> Iterator[RackHandle]:  # type: ignore[no-untyped-def]
    """The current rack of the client config (commands without `-r` talk to it)."""
    name = f"e2e{random.randint(1000, 9999)}"
    handle = RackHandle(
        name, _free_block(), client_home.home / "rack", client_home.env, e2e_database
    )
    _start(handle, *(("--database", e2e_database) if e2e_database else ()))
    _login(handle, docker_client)
    try:
        yield handle
    finally:
        handle.slipway("rack", "stop", "--name", name, timeout=60)
        remove_images_of(handle.registry)


@pytest.fixture(scope="session")
def rack2(rack: RackHandle, client_home: ClientHome, docker_client) -> Iterator[RackHandle]:  # type: ignore[no-untyped-def]
    """A second local rack beside `rack`, in the same client config. `rack` stays the
    current one; this handle's commands talk to rack2 (SLIPWAY_RACK) unless `-r` says
    otherwise."""
    name = f"{rack.name}b"
    env = dict(client_home.env, SLIPWAY_RACK=name)
    handle = RackHandle(name, _free_block(), client_home.home / "rack2", env)
    _start(handle)
    _login(handle, docker_client)
    try:
        rack.ok("switch", rack.name)
        yield handle
    finally:
        handle.slipway("rack", "stop", "--name", name, timeout=60)
        remove_images_of(handle.registry)


@pytest.fixture
def second_engine() -> Iterator[str]:
    """A second Docker engine with its own data root, exec root and socket, seeded with
    the first engine's busybox: a fresh machine's engine. It gets a bridge of its own
    that this fixture makes and removes (an engine started with `--bridge=none` in the
    host's network deletes the first engine's `docker0`) and touches no iptables."""
    root = Path(tempfile.mkdtemp(prefix="eng-", dir="/tmp"))  # a short socket path
    host = f"unix://{root}/docker.sock"
    bridge = f"slw{secrets.token_hex(3)}"
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    for command in (
        ["ip", "link", "add", bridge, "type", "bridge"],
        ["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge],
        ["ip", "link", "set", bridge, "up"],
    ):
        subprocess.run(command, check=True, capture_output=True)
    log = (root / "dockerd.log").open("wb")
    proc = subprocess.Popen(
        [
            "dockerd",
            "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "dockerd.pid"),
            "-H", host,
            "--bridge", bridge,
            "--iptables=false",
            "--ip-masq=false",
        ],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        eventually(
            lambda: (
                subprocess.run(["docker", "-H", host, "version"], capture_output=True).returncode
                == 0
            ),
            timeout=60,
        )
        save = subprocess.Popen(["docker", "save", "busybox:latest"], stdout=subprocess.PIPE)
        loaded = subprocess.run(
            ["docker", "-H", host, "load"], stdin=save.stdout, capture_output=True, timeout=120
        )
        assert save.wait() == 0 and loaded.returncode == 0, loaded.stderr
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
