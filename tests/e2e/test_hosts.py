"""The two-hosts test infrastructure (tests/e2e/hosts.py) does what end-to-end tests
across machines rely on: hosts that reach each other and nothing else, names of their
own, and engines whose containers, builds and pushes happen inside a host; and it
leaves nothing behind."""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import hosts as hosts_module
from tests.e2e.hosts import Engine, Host, make_hosts, start_engine
from tests.helpers import eventually

pytestmark = pytest.mark.docker

# The fixtures of hosts.py, for this module's tests.
two_hosts = hosts_module.two_hosts
two_hosts_module = hosts_module.two_hosts_module

#: Listens on argv[1] (port 0: any), prints its port, then the address of every peer,
#: and sends each one argv[2].
LISTENER = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
while True:
    conn, peer = server.accept()
    print(peer[0], flush=True)
    conn.sendall(sys.argv[2].encode())
    conn.close()
"""

#: Connects to argv[1]:argv[2] and prints what it is sent.
CONNECT = """
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as conn:
    conn.settimeout(5)
    print(conn.recv(100).decode())
"""

RESOLVE = "import socket, sys; print(socket.gethostbyname(sys.argv[1]))"


def _python(host: Host, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return host.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )


class Listener:
    """A TCP listener running inside a host, sending a token to whoever connects."""

    def __init__(self, host: Host) -> None:
        self.token = secrets.token_hex(8)
        self.proc = host.popen(
            [sys.executable, "-c", LISTENER, host.address, self.token],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def peers(self) -> list[str]:
        """The addresses it accepted connections from, once stopped."""
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=10)
        return out.split()


@pytest.fixture
def listener_in_a(two_hosts: list[Host]) -> Iterator[Listener]:
    listener = Listener(two_hosts[0])
    yield listener
    listener.proc.kill()
    listener.proc.wait(10)


def _from_root(address: str, port: int) -> bytes:
    """What a connection from the root namespace to `address:port` is sent (nothing
    when it fails). Some machines route every address out to a proxy that accepts any
    connection, so connecting alone proves nothing."""
    try:
        with socket.create_connection((address, port), timeout=3) as conn:
            conn.settimeout(3)
            return conn.recv(100)
    except OSError:
        return b""


def test_the_hosts_reach_each_other_over_tcp(
    two_hosts: list[Host],
    listener_in_a: Listener,
) -> None:
    a, b = two_hosts
    done = _python(b, CONNECT, a.address, str(listener_in_a.port))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == listener_in_a.token
    assert listener_in_a.peers() == [b.address]

    back = Listener(b)  # and the other way round
    try:
        done = _python(a, CONNECT, b.address, str(back.port))
        assert done.stdout.strip() == back.token, done.stderr
    finally:
        assert back.peers() == [a.address]


def test_the_root_namespace_does_not_reach_the_hosts(
    two_hosts: list[Host],
    listener_in_a: Listener,
) -> None:
    a, b = two_hosts
    assert listener_in_a.token.encode() not in _from_root(a.address, listener_in_a.port)
    # The listener answers whoever does reach it: the host on the other end of the link.
    assert _python(b, CONNECT, a.address, str(listener_in_a.port)).stdout.strip() == (
        listener_in_a.token
    )
    assert listener_in_a.peers() == [b.address]


def test_hosts_entries_resolve_inside_the_host_only(two_hosts: list[Host]) -> None:
    a, b = two_hosts
    alias = f"peer-{secrets.token_hex(4)}.test"
    # A process that runs in `a` from before the entry is added sees it too.
    waiting = a.popen(
        [sys.executable, "-c", f"input(); {RESOLVE}", alias],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        a.set_hosts_entries({**a.hosts_entries, alias: b.address})
        out, err = waiting.communicate("\n", timeout=30)
    finally:
        waiting.kill()
    assert out.strip() == b.address, err

    assert _python(a, RESOLVE, alias).stdout.strip() == b.address
    getent = a.run(["getent", "hosts", alias], capture_output=True, text=True, timeout=30)
    assert getent.stdout.split() == [b.address, alias]
    # Every host knows the others by their names, from the start.
    assert _python(b, RESOLVE, a.name).stdout.strip() == a.address
    assert _python(a, RESOLVE, "localhost").stdout.strip() == "127.0.0.1"

    for elsewhere in (["getent", "hosts", alias], b.exec_argv(["getent", "hosts", alias])):
        done = subprocess.run(elsewhere, capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and done.stdout == ""
    assert subprocess.run(["getent", "hosts", a.name], capture_output=True).returncode != 0


# -- engines in hosts ----------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_in_b(
    two_hosts_module: list[Host], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """A plain-HTTP registry listening on host B's address only: `(name:port, log)`."""
    b = two_hosts_module[1]
    root = tmp_path_factory.mktemp("registry-in-b")
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: {b.address}:5000\n"
    )
    log = root / "registry.log"
    with log.open("wb") as out:
        proc = b.popen(["docker-registry", "serve", str(config)], stdout=out, stderr=out)
    try:
        eventually(lambda: _v2_status(b, f"{b.address}:5000") == "200", timeout=30)
        yield f"{b.name}:5000", log
    finally:
        proc.terminate()
        proc.wait(10)


def _v2_status(host: Host, registry: str) -> str:
    """The HTTP status `/v2/` of `registry` answers a request made inside `host`."""
    script = (
        "import sys, urllib.request\n"
        "print(urllib.request.urlopen(f'http://{sys.argv[1]}/v2/', timeout=5).status)"
    )
    return _python(host, script, registry).stdout.strip()


@pytest.fixture(scope="module")
def engine_in_a(two_hosts_module: list[Host], registry_in_b: tuple[str, Path]) -> Iterator[Engine]:
    a = two_hosts_module[0]
    registry, _ = registry_in_b
    with start_engine(a, "--insecure-registry", registry) as engine:
        yield engine


def test_the_engine_runs_inside_its_host_and_has_busybox(engine_in_a: Engine) -> None:
    assert engine_in_a.docker_ok("version", "--format", "{{.Server.Version}}").strip()
    assert engine_in_a.docker_ok("images", "--format", "{{.Repository}}:{{.Tag}}").split() == [
        "busybox:latest"
    ]
    in_host = os.stat(f"/run/netns/{engine_in_a.host.name}").st_ino
    assert os.stat(f"/proc/{engine_in_a.pid}/ns/net").st_ino == in_host
    assert os.stat("/proc/self/ns/net").st_ino != in_host


def test_containers_run_on_the_hosts_bridge_and_leave_the_root_namespace_alone(
    engine_in_a: Engine,
) -> None:
    out = engine_in_a.docker_ok(
        "run", "--rm", "busybox", "sh", "-c", "echo hi && ip -4 -o addr show eth0"
    )
    first, second = out.splitlines()
    assert first == "hi"
    assert ipaddress.ip_interface(second.split()[3]).ip in engine_in_a.subnet

    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f": {engine_in_a.bridge}:" not in root_links
    in_host = engine_in_a.host.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f": {engine_in_a.bridge}:" in in_host
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert engine_in_a.bridge not in rules and str(engine_in_a.subnet) not in rules


def test_a_buildkit_build_with_a_run_step(engine_in_a: Engine, tmp_path: Path) -> None:
    from services.builder.seams import CancelScope
    from services.common.docker.engine import DockerEngine
    from services.common.docker.types import BuildSpec

    # BuildKit through the engine API, as Slipway's builder drives it: the `docker`
    # CLI here has no buildx, so `DOCKER_BUILDKIT=1 docker build` refuses to run.
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo ok > /f\n")
    engine = DockerEngine(engine_in_a.docker_host)
    lines: list[str] = []
    try:
        image = engine.build(BuildSpec(str(tmp_path), nocache=True), lines.append, CancelScope())
    finally:
        engine.close()
    assert any(line.endswith("RUN echo ok > /f") for line in lines), lines
    assert engine_in_a.docker_ok("run", "--rm", image, "cat", "/f") == "ok\n"


def test_a_classic_build_with_a_run_step(engine_in_a: Engine, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo classic > /f\n")
    tag = f"classic-{secrets.token_hex(3)}:1"
    engine_in_a.docker_ok(
        "build", "-q", "-t", tag, str(tmp_path), env=dict(os.environ, DOCKER_BUILDKIT="0")
    )
    assert engine_in_a.docker_ok("run", "--rm", tag, "cat", "/f") == "classic\n"


def test_the_engines_pushes_originate_in_its_host(
    two_hosts_module: list[Host],
    registry_in_b: tuple[str, Path],
    engine_in_a: Engine,
) -> None:
    a, b = two_hosts_module
    registry, log = registry_in_b
    image = f"{registry}/x:1"  # by host B's name, which only the hosts know
    engine_in_a.docker_ok("tag", "busybox:latest", image)
    engine_in_a.docker_ok("push", image)
    engine_in_a.docker_ok("rmi", image)
    engine_in_a.docker_ok("pull", image)

    requests_seen = [line.split()[0] for line in log.read_text().splitlines() if '"PUT ' in line]
    assert requests_seen and set(requests_seen) == {a.address}

    # The root namespace neither pushes there nor reaches the registry at all.
    by_address = f"{b.address}:5000/x:2"
    subprocess.run(["docker", "tag", "busybox:latest", by_address], check=True)
    try:
        pushed = subprocess.run(["docker", "push", by_address], capture_output=True, timeout=120)
        assert pushed.returncode != 0
    finally:
        subprocess.run(["docker", "rmi", by_address], capture_output=True)
    try:
        answer = urllib.request.urlopen(f"http://{b.address}:5000/v2/", timeout=5)
        assert "Docker-Distribution-Api-Version" not in answer.headers
    except OSError:
        pass  # no route, refused, or a proxy's refusal: not the registry
    catalog = _python(
        b,
        "import urllib.request; print(urllib.request.urlopen("
        f"'http://{b.address}:5000/v2/_catalog', timeout=5).read().decode())",
    )
    assert catalog.stdout.strip() == '{"repositories":["x"]}', catalog.stderr


# -- cleaning up ---------------------------------------------------------------------


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text in proc.joinpath("cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _assert_engine_gone(engine: Engine, container_pid: int) -> None:
    assert not hosts_module._alive(engine.pid)
    assert not hosts_module._alive(container_pid)
    assert _processes_mentioning(f"{engine.root}/") == []
    assert not engine.root.exists()


def _assert_hosts_gone(names: list[str]) -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in names:
        assert name not in listed
        assert not (hosts_module.NETNS_ETC / name).exists()
        assert not Path(f"/run/netns/{name}").exists()


def _container_pid(engine: Engine) -> int:
    """Starts a container that would run for minutes; returns its process id."""
    # (dockerd's shutdown gives it --stop-timeout to end: sleep as PID 1 ignores SIGTERM)
    cid = engine.docker_ok("run", "-d", "--stop-timeout", "1", "busybox", "sleep", "300")
    return int(engine.docker_ok("inspect", "--format", "{{.State.Pid}}", cid.strip()))


def test_cleanup_leaves_no_namespace_folder_bridge_or_process() -> None:
    with make_hosts() as hosts:
        names = [host.name for host in hosts]
        with start_engine(hosts[0]) as engine:
            container = _container_pid(engine)
            assert hosts_module._alive(container)
        _assert_engine_gone(engine, container)
        links = hosts[0].run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert engine.bridge not in links
    _assert_hosts_gone(names)
    root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert engine.bridge not in root_links


def test_an_engine_that_ignores_sigterm_is_killed_with_all_it_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hosts_module, "ENGINE_STOP_TIMEOUT", 1)
    with make_hosts(1) as (host,):
        with start_engine(host) as engine:
            container = _container_pid(engine)
            os.kill(engine.pid, signal.SIGSTOP)  # deaf to SIGTERM until killed
        _assert_engine_gone(engine, container)
        assert host.pids() == []


def test_a_setup_failing_half_way_removes_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    add = hosts_module._add_namespace

    def recorded(name: str) -> None:
        add(name)
        made.append(name)

    def unreachable(source: Host, target: Host) -> None:
        raise RuntimeError("no link")

    monkeypatch.setattr(hosts_module, "_add_namespace", recorded)
    monkeypatch.setattr(hosts_module, "_wait_reachable", unreachable)
    with pytest.raises(RuntimeError, match="no link"), make_hosts():
        pass
    assert len(made) == 2
    _assert_hosts_gone(made)


def test_an_engine_that_fails_to_start_says_why_and_leaves_nothing() -> None:
    with make_hosts(1) as (host,):
        before = set(Path("/tmp").glob("slwe*"))
        with pytest.raises(RuntimeError, match="unknown flag"), start_engine(host, "--no-such"):
            pass
        assert set(Path("/tmp").glob("slwe*")) <= before
        links = host.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
        assert names == {"lo", "eth0", "unplugged"}
