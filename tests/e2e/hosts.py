"""Two machines on one: network namespaces for end-to-end tests across hosts.

`make_hosts()` makes namespaces joined by one veth pair (each end `eth0`, in a private
/30 no route of the root namespace covers), each with its own /etc/hosts naming every
host and no route out of the pair: a host reaches its peer, not the machine's services;
`start_engine(host)` starts a Docker engine inside a host, so its pulls, pushes and
containers originate there. Everything runs as root with `ip netns exec`, which keeps the
filesystem: `host.run([sys.executable, "-c", ...])` runs this test's Python in a host.

    with make_hosts() as (a, b), start_engine(a) as engine:
        engine.docker_ok("run", "--rm", "busybox", "echo", "hi")
        a.run([sys.executable, "-c", "..."], check=True)   # reaches b.address or b.name
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually

#: Where `ip netns exec NAME` finds files it bind-mounts over /etc/* (`hosts` here).
NETNS_ETC = Path("/etc/netns")

#: The range the hosts' /30 is drawn from: private, and unlikely to be routed here.
HOST_RANGE = ipaddress.IPv4Network("10.230.0.0/15")

#: How long an engine has to answer after it starts, and to stop after SIGTERM (its own
#: shutdown waits up to 15 s for containers).
ENGINE_START_TIMEOUT = 60
ENGINE_STOP_TIMEOUT = 45

#: Checks, from inside one host, that `argv[1]` answers on TCP: a refused connection is
#: an answer too (only the peer's kernel sends it); no route or a timeout is not.
_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=2).close()
except ConnectionRefusedError:
    pass
"""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    """Runs `ip ARGS` in the root namespace; raises with its stderr when it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


@dataclass
class Host:
    """One network namespace standing for a machine of its own."""

    name: str
    #: Its IPv4 address on `eth0`, the link to the other hosts.
    address: str
    #: Names its /etc/hosts maps to addresses (besides localhost and this machine's own
    #: hostname); change them with `set_hosts_entries`.
    hosts_entries: dict[str, str] = field(default_factory=dict)

    @property
    def etc(self) -> Path:
        """The folder whose files `ip netns exec` lays over /etc/ in this host."""
        return NETNS_ETC / self.name

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` as a command that runs it inside this host."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """`subprocess.run` of `argv` inside this host (same keyword arguments)."""
        return subprocess.run(self.exec_argv(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """`subprocess.Popen` of `argv` inside this host (same keyword arguments)."""
        return subprocess.Popen(self.exec_argv(argv), **kwargs)

    def pipeline(
        self, command: str, env: Mapping[str, str], timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """A shell pipeline run inside this host, failing when any of its commands fails
        (`pipefail`); its output captured as text."""
        argv = ["bash", "-o", "pipefail", "-c", command]
        return self.run(argv, env=env, capture_output=True, text=True, timeout=timeout)

    def pids(self) -> list[int]:
        """The processes whose network is this host's."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.name], capture_output=True, text=True, timeout=30
        ).stdout
        return [int(pid) for pid in out.split()]

    def set_hosts_entries(self, entries: Mapping[str, str]) -> None:
        """Makes this host's /etc/hosts map exactly `entries` (name -> address). The file
        is rewritten in place, so processes already running in the host see it too."""
        self.hosts_entries = dict(entries)
        lines = [
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            # `ip netns exec` keeps the machine's hostname: keep it resolvable.
            f"127.0.1.1\t{socket.gethostname()}",
            *(f"{address}\t{name}" for name, address in self.hosts_entries.items()),
        ]
        self.etc.mkdir(parents=True, exist_ok=True)
        with (self.etc / "hosts").open("w") as hosts:  # truncates: the same inode
            hosts.write("\n".join(lines) + "\n")


def _routed_networks() -> list[ipaddress.IPv4Network]:
    """The networks the root namespace's main table routes (the default route aside)."""
    out = _ip("-4", "-o", "route", "show").stdout
    found = []
    for line in out.splitlines():
        first = line.split()[0] if line.split() else "default"
        if first != "default":
            found.append(ipaddress.IPv4Network(first, strict=False))
    return found


def _free_link_network() -> ipaddress.IPv4Network:
    """A /30 of HOST_RANGE that no route of the root namespace covers."""
    routed = _routed_networks()
    blocks = HOST_RANGE.num_addresses // 4
    for _ in range(100):
        start = HOST_RANGE.network_address + 4 * secrets.randbelow(blocks)
        candidate = ipaddress.IPv4Network(f"{start}/30")
        if not any(candidate.overlaps(network) for network in routed):
            return candidate
    raise RuntimeError(f"every /30 tried in {HOST_RANGE} is routed here")


def _kill_and_wait(pids: Iterable[int], timeout: float = 15) -> None:
    """SIGKILLs each of `pids` (which this test started) and waits until all are gone."""
    pending = set(pids)
    for pid in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def gone() -> bool:
        return not any(_alive(pid) for pid in pending)

    eventually(gone, timeout=timeout)


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie has exited: it holds no namespace or mount)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _add_namespace(name: str) -> None:
    _ip("netns", "add", name)


def _remove_host(name: str) -> None:
    """Kills what still runs in host `name`, deletes its namespace (and with it the veth
    end and any bridge in it) and its /etc/netns folder."""
    leftovers = Host(name, "").pids()
    if leftovers:
        _kill_and_wait(leftovers)
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
    shutil.rmtree(NETNS_ETC / name, ignore_errors=True)


def _wait_reachable(source: Host, target: Host) -> None:
    """Waits until `source` reaches `target` over TCP (the link takes a moment to come up)."""

    def answers() -> bool:
        done = source.run(
            [sys.executable, "-c", _PROBE, target.address],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"{source.name} cannot reach {target.name}: {done.stderr}"
        return True

    eventually(answers, timeout=20, interval=0.2)


@contextlib.contextmanager
def make_hosts(count: int = 2) -> Iterator[list[Host]]:
    """`count` (1 or 2) fresh hosts: network namespaces named `slw` + hex with `lo` up,
    joined by a veth pair (`eth0` in each; a lone host's other end is its `unplugged`)
    in a private /30, each host's /etc/hosts mapping every host's name to its address.
    Checks that they reach each other; removes everything on exit, and when setup fails
    half way."""
    if count not in (1, 2):
        raise ValueError(f"make_hosts makes 1 or 2 hosts (one veth pair), not {count}")
    link = _free_link_network()
    addresses = [str(address) for address in link.hosts()][:count]
    hosts = [Host(f"slw{secrets.token_hex(4)}", address) for address in addresses]
    with contextlib.ExitStack() as cleanup:
        for host in hosts:
            _add_namespace(host.name)
            cleanup.callback(_remove_host, host.name)
            host.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        if count == 2:
            a, b = hosts
            _ip("link", "add", "eth0", "netns", a.name, "type", "veth",
                "peer", "name", "eth0", "netns", b.name)  # fmt: skip
        else:  # a network card with nobody on the other end (no `dummy` everywhere)
            _ip("link", "add", "eth0", "netns", hosts[0].name, "type", "veth",
                "peer", "name", "unplugged", "netns", hosts[0].name)  # fmt: skip
        for host in hosts:
            for command in (
                ["ip", "addr", "add", f"{host.address}/{link.prefixlen}", "dev", "eth0"],
                ["ip", "link", "set", "eth0", "up"],
            ):
                host.run(command, check=True, capture_output=True)
            host.set_hosts_entries({each.name: each.address for each in hosts})
        for source in hosts:
            for target in hosts:
                if target is not source:
                    _wait_reachable(source, target)
        yield hosts


@pytest.fixture
def two_hosts() -> Iterator[list[Host]]:
    """Two fresh hosts joined by a link, for one test."""
    with make_hosts(2) as hosts:
        yield hosts


@pytest.fixture(scope="module")
def two_hosts_module() -> Iterator[list[Host]]:
    """Two hosts shared by a module's tests (setting up takes about 0.1 s)."""
    with make_hosts(2) as hosts:
        yield hosts


# -- an engine inside a host ---------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    """A Docker engine running inside `host`, driven from anywhere through its socket."""

    host: Host
    #: Its DOCKER_HOST value, `unix:///tmp/…/docker.sock`.
    docker_host: str
    #: The folder holding its data root, exec root, pid file, log and socket.
    root: Path
    #: The bridge its containers attach to, made inside the host, and its network.
    bridge: str
    subnet: ipaddress.IPv4Network
    pid: int

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def docker(
        self, *args: str, timeout: float = 300, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Runs the `docker` CLI against this engine (keyword arguments go to
        `subprocess.run`); the CLI itself may run anywhere, the engine does the work."""
        return subprocess.run(
            ["docker", "-H", self.docker_host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    def docker_ok(self, *args: str, **kwargs: Any) -> str:
        """`docker(*args)`, asserting it succeeded; returns its output."""
        done = self.docker(*args, **kwargs)
        assert done.returncode == 0, f"docker {' '.join(args)} failed: {done.stderr}"
        return done.stdout


def _cgroup_mounts() -> str:
    """Shell commands that mount the cgroup hierarchies the root namespace has, then
    `exec "$@"`.

    `ip netns exec` mounts a fresh sysfs over /sys (so /sys/class/net shows the host's
    links), which hides /sys/fs/cgroup; dockerd then refuses to start ("Devices cgroup
    isn't mounted"). Mounting them again inside `ip netns exec`'s own mount namespace
    touches nothing outside it."""
    commands = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        source, target, kind, options = line.split()[:4]
        if target == "/sys/fs/cgroup" or target.startswith("/sys/fs/cgroup/"):
            commands.append(
                f"mkdir -p {shlex.quote(target)} && mount -t {shlex.quote(kind)}"
                f" -o {shlex.quote(options)} {shlex.quote(source)} {shlex.quote(target)}"
            )
    return " && ".join([*commands, 'exec "$@"'])


def _stop_engine(proc: subprocess.Popen[bytes] | None, host: Host, root: Path, bridge: str) -> None:
    """Stops dockerd (SIGTERM, then SIGKILL), kills whatever of its tree outlived it (its
    containerd, shims and containers, found by pid), deletes its bridge and folder."""
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(ENGINE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # A clean exit leaves none of these; a killed dockerd leaves all of them running:
    # containers by their pid files, containerd and its shims by their command lines.
    containers = [_pid_in(path) for path in root.glob("exec/**/init.pid")]
    own = [pid for pid in host.pids() if f"{root}/" in _cmdline(pid)]
    leftovers = [pid for pid in (*containers, *own) if pid and _alive(pid)]
    if leftovers:
        _kill_and_wait(leftovers)
    host.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)
    # dockerd mounts its overlays in `ip netns exec`'s mount namespace, which is gone
    # with its last process; unmount anything of it seen here all the same, deepest
    # first, before removing the folder.
    for mount in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
    shutil.rmtree(root, ignore_errors=True)


def _pid_in(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _mounts_under(root: Path) -> list[str]:
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [m for m in mounts if m == str(root) or m.startswith(f"{root}/")]


def _seed(docker_host: str, images: Sequence[str]) -> None:
    """Copies `images` from the root engine into the engine at `docker_host`."""
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    loaded = subprocess.run(
        ["docker", "-H", docker_host, "load"], stdin=save.stdout, capture_output=True, timeout=300
    )
    assert save.stdout is not None
    save.stdout.close()
    if save.wait(60) != 0 or loaded.returncode != 0:
        raise RuntimeError(f"seeding {', '.join(images)} failed: {loaded.stderr.decode()}")


@contextlib.contextmanager
def start_engine(
    host: Host, *dockerd_args: str, images: Sequence[str] = ("busybox:latest",)
) -> Iterator[Engine]:
    """A dockerd started inside `host` with a data root, exec root and socket of its own
    under /tmp, a bridge it gets inside the host, no iptables rules and no masquerade
    (nothing of the root namespace's docker0 or iptables is touched), seeded with
    `images` from the root engine. `dockerd_args` are added to its command line (e.g.
    `--insecure-registry`). Stops it and removes all of it on exit."""
    root = Path(tempfile.mkdtemp(prefix="slwe", dir="/tmp"))  # a short socket path
    docker_host = f"unix://{root}/docker.sock"
    bridge = f"br{secrets.token_hex(4)}"
    subnet = ipaddress.IPv4Network(f"192.168.{secrets.randbelow(256)}.0/24")
    (root / "daemon.json").write_text("{}\n")  # never the machine's /etc/docker/daemon.json
    command = [
        "dockerd",
        "--config-file", str(root / "daemon.json"),
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "dockerd.pid"),
        "-H", docker_host,
        "--bridge", bridge,
        "--iptables=false",
        "--ip-masq=false",
        *dockerd_args,
    ]  # fmt: skip
    proc: subprocess.Popen[bytes] | None = None
    try:
        for step in (
            ["ip", "link", "add", bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ):
            host.run(step, check=True, capture_output=True, timeout=30)
        with (root / "dockerd.log").open("wb") as log:
            proc = host.popen(
                ["sh", "-c", _cgroup_mounts(), "dockerd", *command],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        engine = Engine(host, docker_host, root, bridge, subnet, proc.pid)
        _wait_answers(proc, engine)
        _seed(docker_host, images)
        yield engine
    finally:
        _stop_engine(proc, host, root, bridge)


def _wait_answers(proc: subprocess.Popen[bytes], engine: Engine) -> None:
    """Waits until the engine answers; raises with its log when it exits or never does."""

    def up_or_gone() -> bool:
        return proc.poll() is not None or engine.docker("version", timeout=30).returncode == 0

    started = time.monotonic()
    with contextlib.suppress(Exception):  # the verdict is checked just below
        eventually(up_or_gone, timeout=ENGINE_START_TIMEOUT, interval=0.1)
    if proc.poll() is not None or engine.docker("version", timeout=30).returncode != 0:
        tail = engine.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"dockerd in {engine.host.name} did not answer within "
            f"{time.monotonic() - started:.0f} s (exit {proc.poll()}):\n{tail}"
        )
