"""Scale-out on a real rack: three builders sharing one queue on PostgreSQL, archives in S3
(moto in server mode), one registry. Each build runs exactly once; a builder killed or
paused loses its build to the lease sweep and writes nothing after; cancel works through
any builder; deadlines stop builds; a builder on another engine builds and pushes."""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.cli.config import ClientConfig
from tests.conftest import S3Endpoint, new_database
from tests.e2e.conftest import (
    SLIPWAY,
    ClientHome,
    RackHandle,
    _free_block,
    _login,
    _start,
)
from tests.helpers import (
    build_id_of,
    eventually,
    pull_back,
    remove_images_of,
    run_docker,
    write_files,
)

pytestmark = pytest.mark.docker

MANIFEST = "services:\n  web:\n    build: .\n"
LOST = re.compile(r"^builder lost: (builder-\d+) stopped renewing its lease$")


@dataclass
class Scaled:
    rack: RackHandle
    bucket: str
    s3: S3Endpoint
    #: The client's current rack before this one started (the other tests' rack).
    current: str

    def start_again(self) -> str:
        """`slipway rack start` for this rack, the others' current rack kept current."""
        out = self.rack.ok("rack", "start", "--name", self.rack.name)
        if self.current:
            self.rack.ok("switch", self.current)
        return out


@pytest.fixture(scope="module")
def scaled(  # type: ignore[no-untyped-def]
    docker_client, client_home: ClientHome, postgres_url: str, s3: S3Endpoint, tmp_path_factory
) -> Iterator[Scaled]:
    config_file = Path(client_home.env["XDG_CONFIG_HOME"]) / "slipway" / "config.json"
    before = ClientConfig.load(config_file).current if config_file.exists() else ""
    with new_database(postgres_url) as url:
        bucket = s3.bucket()
        name = f"scale{random.randint(1000, 9999)}"
        env = {**client_home.env, **s3.env, "SLIPWAY_RACK": name}
        handle = RackHandle(name, _free_block(), tmp_path_factory.mktemp("scaled"), env, url)
        _start(handle, "--builders", "3", "--database", url, "--archives", f"s3://{bucket}/rack")
        if before:  # the other tests' rack stays the current one
            handle.ok("switch", before)
        _login(handle, docker_client)
        try:
            yield Scaled(handle, bucket, s3, before)
        finally:
            handle.slipway("rack", "stop", "--name", name, timeout=90)
            remove_images_of(handle.registry)


@dataclass(frozen=True)
class Builder:
    id: str
    state: str
    address: str
    pid: int
    running: tuple[str, ...]


def builders(rack: RackHandle) -> dict[str, Builder]:
    """Every builder `rack status` lists."""
    out = rack.ok("rack", "status", "--name", rack.name)
    found: dict[str, Builder] = {}
    for line in out.splitlines():
        m = re.match(r"^(builder-\d+)\s+(\S+)\s+(\S+)(?: pid (\d+))?.*?(?:building (\S+))?$", line)
        if m:
            running = tuple(m.group(5).split(",")) if m.group(5) else ()
            found[m.group(1)] = Builder(
                m.group(1), m.group(2), m.group(3), int(m.group(4) or 0), running
            )
    return found


def through(rack: RackHandle, builder: Builder) -> RackHandle:
    """`rack`, driven through one builder's front door."""
    token = (rack.data / "token").read_text().strip()
    env = {**rack.env, "SLIPWAY_HOST": builder.address, "SLIPWAY_TOKEN": token}
    return RackHandle(rack.name, rack.port, rack.data, env, rack.database)


def another(rack: RackHandle, than: Builder, idle: bool = False) -> Builder:
    """A running builder other than `than` (and running no build, when `idle`)."""
    return next(
        b
        for b in builders(rack).values()
        if b.id != than.id and b.state == "running" and not (idle and b.running)
    )


def owner_of(rack: RackHandle, build_id: str) -> Builder:
    def check() -> Builder:
        owners = [b for b in builders(rack).values() if build_id in b.running]
        assert len(owners) == 1, owners
        return owners[0]

    return eventually(check, timeout=60)


def info(rack: RackHandle, app: str, build_id: str) -> dict[str, str]:
    lines = rack.ok("builds", "info", build_id, "-a", app).splitlines()
    return {k: v.strip() for k, _, v in (line.partition("  ") for line in lines)}


def claims(rack: RackHandle, build_id: str) -> int:
    """How many times any builder of the rack claimed the build (its own logs)."""
    logs = (rack.data / "logs").glob("builder*.log")
    return sum(f.read_text().count(f"[{build_id}] claimed") for f in logs)


def slow_app(folder: Path, marker: str, seconds: int) -> Path:
    return write_files(
        folder,
        {
            "convox.yml": MANIFEST,
            "Dockerfile": f"FROM busybox\nRUN echo started-{marker} && sleep {seconds}\n",
        },
    )


def spawn(rack: RackHandle, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SLIPWAY, *args], env=rack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def running_build(rack: RackHandle, app: str, marker: str) -> str:
    def check() -> str:
        rows = rack.ok("builds", "-a", app).splitlines()[1:]
        assert rows and rows[0].split()[1] == "running", rows
        build_id = rows[0].split()[0]
        logs = rack.ok("builds", "logs", build_id, "-a", app, "--no-follow")
        assert f"started-{marker}" in logs
        return build_id

    return eventually(check, timeout=90)


def step_running(seconds: int) -> bool:
    """Whether a RUN step's `sleep SECONDS` runs on this machine."""
    found = subprocess.run(["pgrep", "-f", f"sleep {seconds}$"], capture_output=True, timeout=30)
    return found.returncode == 0


def unique_sleep(marker: str, base: int) -> int:
    return base + int(marker, 16) % 200


def test_twelve_builds_at_once_each_run_exactly_once(scaled: Scaled, tmp_path: Path) -> None:
    rack = scaled.rack
    marker = secrets.token_hex(4)
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": MANIFEST,
            "Dockerfile": f"FROM busybox\nARG N\nRUN echo ran-$N-{marker} && sleep 2\n",
        },
    )
    apps = [f"twelve-{marker}-{i}" for i in range(12)]
    for app in apps:
        rack.ok("apps", "create", app)
    procs = [
        spawn(rack, "build", str(src), "-a", app, "--build-args", f"N={i}")
        for i, app in enumerate(apps)
    ]
    outs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 12, outs
    owners: set[str] = set()
    for i, (app, (out, _)) in enumerate(zip(apps, outs, strict=True)):
        build_id = build_id_of(out)
        assert info(rack, app, build_id)["Status"] == "complete"
        log = rack.ok("builds", "logs", build_id, "-a", app, "--no-follow").splitlines()
        assert sum(line.startswith("Building: ") for line in log) == 1, log
        assert sum(line.endswith(f" ran-{i}-{marker}") for line in log) == 1, log
        releases = rack.ok("releases", "-a", app).splitlines()[1:]
        assert len(releases) == 1 and build_id in releases[0], releases
        assert claims(rack, build_id) == 1
        claimed_by = [
            "builder-1" if f.stem == "builder" else f.stem  # builder-1 logs as the part
            for f in (rack.data / "logs").glob("builder*.log")
            if f"[{build_id}] claimed" in f.read_text()
        ]
        # `builds info` names the builder that took it, the one whose log says so.
        assert [info(rack, app, build_id)["Builder"]] == claimed_by
        owners |= set(claimed_by)
    assert len(owners) >= 2, owners  # 12 builds are more than one builder's 4 slots
    # The source is in S3, under its content address, and not on this machine's disk.
    keys = [o["Key"] for o in scaled.s3.client().list_objects_v2(Bucket=scaled.bucket)["Contents"]]
    assert keys and all(re.match(r"^rack/objects/[0-9a-f]{64}$", k) for k in keys), keys
    assert not list((rack.data / "archive").rglob("objects/*/*"))


def test_a_killed_builder_loses_its_build_and_the_others_go_on(
    scaled: Scaled, tmp_path: Path
) -> None:
    rack = scaled.rack
    marker = secrets.token_hex(4)
    app = f"killed-{marker}"
    rack.ok("apps", "create", app)
    seconds = unique_sleep(marker, 60)
    follower = spawn(rack, "build", str(slow_app(tmp_path / "slow", marker, seconds)), "-a", app)
    try:
        build_id = running_build(rack, app, marker)
        victim = owner_of(rack, build_id)
        survivor = through(rack, another(rack, victim, idle=True))
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()

        def lost() -> dict[str, str]:
            found = info(survivor, app, build_id)
            assert found["Status"] == "failed"
            return found

        ended = eventually(lost, timeout=60)
        assert time.monotonic() - killed <= 60
        assert LOST.match(ended["Reason"]) and LOST.match(ended["Reason"]).group(1) == victim.id  # type: ignore[union-attr]
        assert ended["Builder"] == victim.id  # the builder that ran it, and lost it
        # The others keep building; nothing restarted the lost build.
        other = write_files(
            tmp_path / "other", {"convox.yml": MANIFEST, "Dockerfile": "FROM busybox\n"}
        )
        survivor.ok("apps", "create", f"{app}-after")
        survivor.ok("build", str(other), "-a", f"{app}-after")
        time.sleep(3)
        assert claims(rack, build_id) == 1
        assert info(survivor, app, build_id)["Status"] == "failed"
        assert builders(survivor)[victim.id].state == "stopped"
    finally:
        follower.kill()
        follower.wait(10)
        subprocess.run(["pkill", "-f", f"sleep {seconds}$"], capture_output=True)
    # Started again, the rack brings the builder back; add-builder adds one more.
    scaled.start_again()
    assert builders(rack)[victim.id].state == "running"
    added = rack.ok("rack", "add-builder", "--name", rack.name)
    number = re.search(r"^Started (builder-\d+) at ", added, re.M).group(1)  # type: ignore[union-attr]
    assert builders(rack)[number].state == "running"
    assert claims(rack, build_id) == 1 and info(rack, app, build_id) == ended


def test_a_paused_builder_loses_its_build_and_writes_nothing_when_it_wakes(
    scaled: Scaled, tmp_path: Path
) -> None:
    rack = scaled.rack
    marker = secrets.token_hex(4)
    app = f"paused-{marker}"
    rack.ok("apps", "create", app)
    seconds = unique_sleep(marker, 300)
    follower = spawn(rack, "build", str(slow_app(tmp_path / "slow", marker, seconds)), "-a", app)
    try:
        build_id = running_build(rack, app, marker)
        sleeper = owner_of(rack, build_id)
        survivor = through(rack, another(rack, sleeper))
        os.kill(sleeper.pid, signal.SIGSTOP)
        paused = time.monotonic()
        try:
            ended = eventually(
                lambda: (i := info(survivor, app, build_id))["Status"] == "failed" and i, timeout=58
            )
            assert LOST.match(ended["Reason"]).group(1) == sleeper.id  # type: ignore[union-attr]
            log = survivor.ok("builds", "logs", build_id, "-a", app, "--no-follow")
            time.sleep(max(0.0, 45 - (time.monotonic() - paused)))
        finally:
            os.kill(sleeper.pid, signal.SIGCONT)
        # Awake, it finds its lease gone: the RUN step stops and nothing more is written.
        eventually(lambda: not step_running(seconds), timeout=30)
        time.sleep(6)  # past a renewal of the woken builder
        assert info(survivor, app, build_id) == ended
        assert survivor.ok("builds", "logs", build_id, "-a", app, "--no-follow") == log
        assert build_id not in survivor.ok("releases", "-a", app)
        assert builders(rack)[sleeper.id].running == ()
    finally:
        follower.kill()
        follower.wait(10)


def test_cancel_through_another_builder_stops_the_run_step(scaled: Scaled, tmp_path: Path) -> None:
    rack = scaled.rack
    marker = secrets.token_hex(4)
    app = f"cancel-{marker}"
    rack.ok("apps", "create", app)
    seconds = unique_sleep(marker, 500)
    follower = spawn(rack, "build", str(slow_app(tmp_path / "slow", marker, seconds)), "-a", app)
    try:
        build_id = running_build(rack, app, marker)
        assert step_running(seconds)
        owner = owner_of(rack, build_id)
        through(rack, another(rack, owner)).ok("builds", "cancel", build_id, "-a", app)
        eventually(lambda: not step_running(seconds), timeout=30)
        assert info(rack, app, build_id)["Status"] == "cancelled"
        assert follower.wait(60) != 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)


def test_a_build_past_its_timeout_is_stopped(scaled: Scaled, tmp_path: Path) -> None:
    rack = scaled.rack
    marker = secrets.token_hex(4)
    app = f"timeout-{marker}"
    rack.ok("apps", "create", app)
    seconds = unique_sleep(marker, 700)
    src = slow_app(tmp_path / "slow", marker, seconds)
    res = rack.slipway("build", str(src), "-a", app, "--timeout", "5s")
    assert res.code == 1, res
    assert res.err.strip().splitlines()[-1] == "ERROR: build failed: timed out after 5s", res.err
    build_id = rack.ok("builds", "-a", app).splitlines()[1].split()[0]
    found = info(rack, app, build_id)
    assert (found["Status"], found["Reason"]) == ("failed", "timed out after 5s")
    eventually(lambda: not step_running(seconds), timeout=30)
    bad = rack.slipway("build", str(src), "-a", app, "--timeout", "soon")
    assert bad.code != 0 and "invalid duration" in bad.err


def test_a_builder_on_another_engine_builds_and_pushes(
    scaled: Scaled, tmp_path: Path, second_engine: str
) -> None:
    rack = scaled.rack
    added = rack.ok("rack", "add-builder", "--name", rack.name, "--engine", second_engine)
    number = re.search(r"^Started (builder-\d+) at ", added, re.M).group(1)  # type: ignore[union-attr]
    listed = builders(rack)
    assert f"engine {second_engine}" in rack.ok("rack", "status", "--name", rack.name)
    marker = secrets.token_hex(4)
    app = f"engine2-{marker}"
    rack.ok("apps", "create", app)
    src = write_files(
        tmp_path / "app",
        {"convox.yml": MANIFEST, "Dockerfile": f"FROM busybox\nRUN echo {marker} > /m\n"},
    )
    # Only the new builder may claim: the others are paused for the build's few seconds.
    others = [b for b in listed.values() if b.id != number and b.state == "running"]
    for b in others:
        os.kill(b.pid, signal.SIGSTOP)
    try:
        out = through(rack, listed[number]).ok("build", str(src), "-a", app)
    finally:
        for b in others:
            os.kill(b.pid, signal.SIGCONT)
    build_id = build_id_of(out)
    assert claims(rack, build_id) == 1
    assert f"[{build_id}] claimed" in (rack.data / "logs" / f"{number}.log").read_text()
    # Pushed to the rack registry, pulled back on the first engine: the very image the
    # second engine built.
    image = pull_back(rack.registry, app, "web", build_id)
    assert run_docker("run", "--rm", image, "cat", "/m").strip() == marker
    image_id = run_docker("image", "inspect", "--format", "{{.Id}}", image).strip()
    there = subprocess.run(
        ["docker", "-H", second_engine, "image", "inspect", image_id], capture_output=True
    )
    assert there.returncode == 0, there.stderr
