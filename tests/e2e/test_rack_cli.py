"""What the `slipway` command tells a person about racks, through the command itself (and
make): a taken port names the base port and both ways to choose another, a running rack
keeps its port, a local rack that does not answer says how to start it, and `slipway rack`
shows the registry `docker pull` names and where the token `login --token` wants is."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import SLIPWAY, ClientHome, RackHandle, Result, _free_block
from tests.helpers import pull_back, write_files

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(client_home: ClientHome, tmp_path: Path) -> dict[str, str]:
    """A client home of this test's own: racks it starts never become the session's."""
    return dict(
        client_home.env,
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
    )


@pytest.fixture
def own_rack(home: dict[str, str]) -> Iterator[RackHandle]:
    """A rack of this test's own, in its own client home, at its default data folder."""
    name = f"own{secrets.token_hex(2)}"
    data = Path(home["XDG_DATA_HOME"]) / "slipway" / "racks" / name
    handle = RackHandle(name, _free_block(), data, home)
    handle.ok("rack", "start", "--name", name, "--port", str(handle.port))
    try:
        yield handle
    finally:
        handle.slipway("rack", "stop", "--name", name, timeout=60)


def _run(env: dict[str, str], *argv: str) -> Result:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def taken() -> Iterator[socket.socket]:
    """A socket another program could hold: bind it to a port, and listen."""
    with socket.socket() as held:
        yield held


def _hold(held: socket.socket, port: int) -> None:
    held.bind(("127.0.0.1", port))
    held.listen()


def test_make_up_with_a_taken_port_names_the_base_port_and_both_ways_out(
    home: dict[str, str], taken: socket.socket, tmp_path: Path
) -> None:
    base = _free_block()
    _hold(taken, base + 4)
    done = _run(home, "make", "-C", str(ROOT), "up", f"PORT={base}")
    assert done.code != 0
    assert (
        f"ERROR: cannot start the rack: port {base + 4} (base port {base} + 4, the registry) "
        "is in use; choose another base port with --port, or PORT=… for make"
    ) in done.err.splitlines()
    assert "Traceback" not in done.err
    # Nothing started, nothing recorded.
    assert not (tmp_path / "data" / "slipway" / "racks" / "local").exists()
    assert not (tmp_path / "config" / "slipway" / "config.json").exists()


def test_rack_start_on_a_taken_base_port_fails_in_one_line(
    home: dict[str, str], taken: socket.socket, tmp_path: Path
) -> None:
    base = _free_block()
    _hold(taken, base)
    data = tmp_path / "rack"
    done = _run(
        home, SLIPWAY, "rack", "start", "--name", "taken", "--port", str(base), "--data", str(data)
    )
    assert (done.code, done.err) == (
        1,
        f"ERROR: cannot start the rack: port {base} (the base port, the builder) is in use; "
        "choose another base port with --port, or PORT=… for make\n",
    )
    assert not data.exists()


def test_a_running_rack_keeps_its_port(rack: RackHandle) -> None:
    moved = rack.slipway("rack", "start", "--name", rack.name, "--port", str(_free_block()))
    assert (moved.code, moved.err) == (
        1,
        f"ERROR: rack {rack.name} is running with other addresses or another registry: stop "
        "it ('slipway rack stop') before changing --port, --listen, --advertise or --registry\n",
    )
    assert (
        json.loads(rack.ok("rack", "-r", rack.name, "--json"))["host"] == f"127.0.0.1:{rack.port}"
    )


def test_a_local_rack_that_does_not_answer_says_how_to_start_it(own_rack: RackHandle) -> None:
    # The same rack logged in to as a remote one: not this machine's to start.
    address = f"127.0.0.1:{own_rack.port}"
    token = (own_rack.data / "token").read_text().strip()
    ca = own_rack.data / "tls" / "ca.pem"
    own_rack.ok("login", address, "--name", "far", "--token", token, "--ca", str(ca))
    own_rack.ok("rack", "stop", "--name", own_rack.name)

    local = own_rack.slipway("builds", "-a", "any", "-r", own_rack.name)
    assert (local.code, local.err) == (
        1,
        f"ERROR: rack unreachable at {address} "
        f"(is the rack running? start it with: slipway rack start --name {own_rack.name})\n",
    )
    remote = own_rack.slipway("builds", "-a", "any", "-r", "far")
    assert (remote.code, remote.err) == (1, f"ERROR: rack unreachable at {address}\n")


def test_rack_shows_the_registry_docker_pulls_from_and_where_the_token_is(
    rack: RackHandle, home: dict[str, str], tmp_path: Path
) -> None:
    app = f"pull-{secrets.token_hex(3)}"
    rack.ok("apps", "create", app)
    files = {"convox.yml": "services:\n  web:\n    build: .\n", "Dockerfile": "FROM busybox\n"}
    src = write_files(tmp_path / "src", files)
    release = rack.ok("build", str(src), "-a", app, "--id").strip()
    build = json.loads(rack.ok("releases", "info", release, "-a", app, "--json"))["build"]

    shown = rack.ok("rack", "-r", rack.name).splitlines()
    assert shown[2:] == [f"Registry  {rack.registry}", f"Token     {rack.data / 'token'}"]
    shown_json = json.loads(rack.ok("rack", "-r", rack.name, "--json"))
    assert (shown_json["registry"], shown_json["token_file"]) == (
        rack.registry,
        str(rack.data / "token"),
    )
    # The registry shown is the one `docker pull` names (this session is logged in to it).
    pull_back(shown_json["registry"], app, "web", build)

    # The token file shown is what `login --token` wants, on another client.
    elsewhere = RackHandle("elsewhere", rack.port, rack.data, home)
    token = Path(shown_json["token_file"]).read_text().strip()
    ca = str(rack.data / "tls" / "ca.pem")
    address = f"127.0.0.1:{rack.port}"
    refused = elsewhere.slipway("login", address, "--token", "wrong", "--ca", ca)
    assert (refused.code, refused.err.splitlines()[-1]) == (
        1,
        "ERROR: unauthorized: the rack refused the token (--token wants the contents of the "
        "file 'slipway rack' shows as Token on the rack's machine, by default "
        "~/.local/share/slipway/racks/local/token)",
    )
    elsewhere.ok("login", address, "--name", "far", "--token", token, "--ca", ca)
    # A remote rack tells its registry itself; its token is in the client configuration.
    far = json.loads(elsewhere.ok("rack", "--json"))
    assert far == {
        "name": "far",
        "host": address,
        "local": False,
        "registry": rack.registry,
        "token_file": str(Path(home["XDG_CONFIG_HOME"]) / "slipway" / "config.json"),
    }
