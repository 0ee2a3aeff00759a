"""`make bench`: moves a build of at least 1 GiB of layers between two fresh local racks
and records throughput and peak memory in bench/results.json, next to the same run's
`docker save | docker load` as the reference; then `builds copy` of the same build from
bench1 into a fresh app of bench2 (rack to rack, service to service, every layer missing);
then the build time of a 4-stage Dockerfile (three independent stages and a final one) with
BuildKit (bench1) and with the legacy builder (a rack started `--engine-builder legacy`);
six builds on one builder and on three; and a 512 MiB context of 10,000 files built first,
rebuilt unchanged and with one 1 KiB file changed, next to `docker build` of that folder.

Peak memory is the kernel's own count: `ru_maxrss` of each client process (from wait4)
and `VmHWM` of each service process (its peak since the rack started for this run; reset
through /proc/PID/clear_refs before the copy, so the copy's peaks are its own).
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLIPWAY = str(Path(sys.executable).parent / "slipway")
RESULTS = ROOT / "bench" / "results.json"
MIB = 1024 * 1024
LAYER_MIB = int(os.environ.get("SLIPWAY_BENCH_LAYER_MIB", "512"))  # two layers: 1 GiB
SERVICES = ("builder", "archive", "metadata", "registry")


@dataclass
class Run:
    seconds: float
    peak_rss_mib: dict[str, float]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),
    )
    for var in ("SLIPWAY_RACK", "SLIPWAY_HOST", "SLIPWAY_TOKEN"):
        env.pop(var, None)
    return env


def _slipway(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([SLIPWAY, *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"slipway {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _pipeline(commands: list[list[str]], env: dict[str, str]) -> Run:
    """Runs `a | b | …`, returning the wall time and each process's peak RSS."""
    start = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    stdin = None
    for i, argv in enumerate(commands):
        last = i == len(commands) - 1
        proc = subprocess.Popen(
            argv, env=env, stdin=stdin, stdout=subprocess.DEVNULL if last else subprocess.PIPE
        )
        if stdin is not None:
            stdin.close()  # the next process owns the read end now
        stdin = proc.stdout
        procs.append(proc)
    peaks: dict[str, float] = {}
    for argv, proc in zip(commands, procs, strict=True):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        name = " ".join(a for a in argv[:3] if not a.startswith("/")) or argv[0]
        peaks[f"{Path(argv[0]).name} {name}"] = round(usage.ru_maxrss / 1024, 1)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return Run(time.monotonic() - start, peaks)


def _service_peaks(data: Path) -> dict[str, float]:
    peaks = {}
    for part in SERVICES:
        pid = (data / "run" / f"{part}.pid").read_text().strip()
        status = Path(f"/proc/{pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
        peaks[part] = round(int(match.group(1)) / 1024, 1) if match else -1.0
    return peaks


def _reset_peaks(data: Path) -> None:
    """Resets each service's VmHWM to its current RSS (`5` > /proc/PID/clear_refs)."""
    for part in SERVICES:
        pid = (data / "run" / f"{part}.pid").read_text().strip()
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _timed(argv: list[str], env: dict[str, str]) -> tuple[Run, str]:
    """Runs one command, returning its wall time, peak RSS and stderr (a few lines)."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{err}")
    name = f"slipway {' '.join(argv[1:3])}"
    return Run(time.monotonic() - start, {name: round(usage.ru_maxrss / 1024, 1)}), err


def _free_base() -> int:
    import socket

    while True:
        base = random.randint(30000, 50000)
        try:
            for port in range(base, base + 5):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="slipway-bench-"))
    env = _env(home)
    racks = {"bench1": home / "bench1", "bench2": home / "bench2"}
    try:
        for name, data in racks.items():
            _slipway(
                env,
                "rack",
                "start",
                "--name",
                name,
                "--port",
                str(_free_base()),
                "--data",
                str(data),
            )
        for rack_name, apps in (
            ("bench1", ["big", "stages", "context"]),
            ("bench2", ["big2", "big3"]),
        ):
            for name in apps:
                _slipway(env, "apps", "create", name, "-r", rack_name)
        for i in range(SCALE_BUILDS):
            _slipway(env, "apps", "create", f"sleepy{i}", "-r", "bench1")
        app = home / "big"
        app.mkdir()
        (app / "convox.yml").write_text("services:\n  web:\n    build: .\n")
        (app / "Dockerfile").write_text(
            "FROM busybox\n"
            f"RUN head -c {LAYER_MIB * MIB} /dev/urandom > /layer-a\n"
            f"RUN head -c {LAYER_MIB * MIB} /dev/urandom > /layer-b\n"
        )
        out = _slipway(env, "build", str(app), "-a", "big", "-r", "bench1", "--no-cache")
        build_id = re.search(r"^Build: +(B[A-Z]{10})$", out, re.M).group(1)  # type: ignore[union-attr]
        image = f"big-{build_id.lower()}"
        registry1 = json.loads((home / "config" / "slipway" / "config.json").read_text())
        port1 = registry1["racks"]["bench1"]["local"]["port"]
        ref = f"127.0.0.1:{port1 + 4}/big:web.{build_id}"
        size = int(
            subprocess.run(
                ["docker", "image", "inspect", "-f", "{{.Size}}", ref],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )

        # The reference, measured in this run: docker save | docker load of the same image.
        subprocess.run(["docker", "tag", ref, f"{image}:ref"], check=True)
        reference = _pipeline([["docker", "save", f"{image}:ref"], ["docker", "load", "-q"]], env)
        subprocess.run(["docker", "rmi", f"{image}:ref"], capture_output=True)

        moved = _pipeline(
            [
                [SLIPWAY, "builds", "export", build_id, "-a", "big", "-r", "bench1"],
                [SLIPWAY, "builds", "import", "-a", "big2", "-r", "bench2", "--id"],
            ],
            env,
        )
        service_peaks = {name: _service_peaks(d) for name, d in racks.items()}
        halves = _halves(env, home, build_id, image, ref)

        # builds copy: bench2 fetches the build from bench1 itself, into a fresh app.
        for data in racks.values():
            _reset_peaks(data)
        copy_argv = [SLIPWAY, "builds", "copy", build_id, "-a", "big", "-r", "bench1"]
        copy_argv += ["--to", "bench2", "--to-app", "big3", "--id"]
        copied, copy_err = _timed(copy_argv, env)
        copy_summary = copy_err.strip().splitlines()[-1]
        results = {
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "image_bytes": size,
            "reference_docker_save_load": {
                "seconds": round(reference.seconds, 2),
                "mib_per_s": round(size / MIB / reference.seconds, 1),
                "peak_rss_mib": reference.peak_rss_mib,
            },
            "export_import_pipe": {
                "seconds": round(moved.seconds, 2),
                "mib_per_s": round(size / MIB / moved.seconds, 1),
                "vs_reference": round(reference.seconds / moved.seconds, 2),
                "client_peak_rss_mib": moved.peak_rss_mib,
            },
            "service_peak_rss_mib": service_peaks,
            "builds_copy": {
                "seconds": round(copied.seconds, 2),
                "mib_per_s": round(size / MIB / copied.seconds, 1),
                "vs_reference": round(reference.seconds / copied.seconds, 2),
                "vs_export_import": round(moved.seconds / copied.seconds, 2),
                "summary": copy_summary,
                "client_peak_rss_mib": copied.peak_rss_mib,
                "service_peak_rss_mib": {name: _service_peaks(d) for name, d in racks.items()},
            },
        }
        results["export_import_halves"] = halves
        results["four_stage_build"] = _stage_builds(env, home)
        results["six_builds"] = _scale_out(env, home)
        results["context_builds"] = _context_builds(env, home, racks["bench1"])
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results, indent=2))
        return 0
    finally:
        hosts = _registry_hosts(home)
        for name in racks:
            subprocess.run([SLIPWAY, "rack", "stop", "--name", name], env=env, capture_output=True)
        _remove_images(hosts)
        shutil.rmtree(home, ignore_errors=True)


def _halves(
    env: dict[str, str], home: Path, build_id: str, image: str, ref: str
) -> dict[str, float]:
    """Each half of the move through a file, next to the same halves of `docker save` and
    `docker load`: where the pipe's time goes."""
    spool = home / "halves.tar"
    timings: dict[str, float] = {}

    def timed(label: str, argv: list[str]) -> None:
        start = time.monotonic()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        timings[label] = round(time.monotonic() - start, 2)

    subprocess.run(["docker", "tag", ref, f"{image}:halves"], check=True)
    timed("docker_save_to_file", ["docker", "save", "-o", str(spool), f"{image}:halves"])
    subprocess.run(["docker", "rmi", f"{image}:halves"], capture_output=True)
    timed("docker_load_from_file", ["docker", "load", "-q", "-i", str(spool)])
    subprocess.run(["docker", "rmi", f"{image}:halves"], capture_output=True)
    spool.unlink()
    export = [SLIPWAY, "builds", "export", build_id, "-a", "big", "-r", "bench1", "-f", str(spool)]
    timed("slipway_export_to_file", export)
    _slipway(env, "apps", "create", "halves", "-r", "bench2")
    timed(
        "slipway_import_from_file",
        [SLIPWAY, "builds", "import", "-a", "halves", "-r", "bench2", "-f", str(spool), "--id"],
    )
    spool.unlink()
    return timings


FOUR_STAGES = (
    "FROM busybox AS one\nRUN sleep 2 && echo one > /one\n"
    "FROM busybox AS two\nRUN sleep 2 && echo two > /two\n"
    "FROM busybox AS three\nRUN sleep 2 && echo three > /three\n"
    "FROM busybox\nCOPY --from=one /one /one\nCOPY --from=two /two /two\n"
    "COPY --from=three /three /three\nRUN cat /one /two /three\n"
)


def _stage_builds(env: dict[str, str], home: Path) -> dict[str, object]:
    """`slipway build --no-cache` of FOUR_STAGES on bench1 (BuildKit) and on a legacy
    rack, each timed whole (upload to release) and as the build record's elapsed time."""
    app = home / "stages"
    app.mkdir()
    (app / "convox.yml").write_text("services:\n  web:\n    build: .\n")
    (app / "Dockerfile").write_text(FOUR_STAGES)
    _slipway(
        env,
        "rack", "start", "--name", "bench3", "--port", str(_free_base()),
        "--data", str(home / "bench3"), "--engine-builder", "legacy",
    )  # fmt: skip
    _slipway(env, "apps", "create", "stages", "-r", "bench3")
    timings: dict[str, dict[str, float]] = {}
    try:
        for label, rack in (("buildkit", "bench1"), ("legacy", "bench3")):
            start = time.monotonic()
            out = _slipway(env, "build", str(app), "-a", "stages", "-r", rack, "--no-cache")
            whole = time.monotonic() - start
            build_id = re.search(r"^Build: +(B[A-Z]{10})$", out, re.M).group(1)  # type: ignore[union-attr]
            info = _slipway(env, "builds", "info", build_id, "-a", "stages", "-r", rack)
            elapsed = re.search(r"^Elapsed +(?:(\d+)m)?(\d+)s$", info, re.M)
            recorded = int(elapsed.group(1) or 0) * 60 + int(elapsed.group(2)) if elapsed else -1  # type: ignore[union-attr]
            timings[label] = {"seconds": round(whole, 2), "recorded_elapsed_s": recorded}
    finally:
        subprocess.run([SLIPWAY, "rack", "stop", "--name", "bench3"], env=env, capture_output=True)
    return {
        **timings,
        "stage_sleep_s": 2,
        "legacy_over_buildkit": round(
            timings["legacy"]["seconds"] / timings["buildkit"]["seconds"], 2
        ),
    }


SCALE_BUILDS = 6


def _scale_out(env: dict[str, str], home: Path) -> dict[str, object]:
    """Six `slipway build`s of `RUN sleep 3` (each its own app and build arg, no cache)
    started at once: on bench1 (one builder, its 4 slots) and on a rack of three builders
    sharing one queue; wall time from the first start to the last release."""
    app = home / "sleepy"
    app.mkdir()
    (app / "convox.yml").write_text("services:\n  web:\n    build: .\n")
    (app / "Dockerfile").write_text("FROM busybox\nARG N\nRUN echo build-$N && sleep 3\n")
    _slipway(
        env,
        "rack", "start", "--name", "bench4", "--port", str(_free_base()),
        "--data", str(home / "bench4"), "--builders", "3",
    )  # fmt: skip
    for i in range(SCALE_BUILDS):
        _slipway(env, "apps", "create", f"sleepy{i}", "-r", "bench4")
    timings: dict[str, float] = {}
    try:
        for label, rack in (("one_builder", "bench1"), ("three_builders", "bench4")):
            start = time.monotonic()
            procs = [
                subprocess.Popen(
                    [
                        SLIPWAY,
                        "build",
                        str(app),
                        "-a",
                        f"sleepy{i}",
                        "-r",
                        rack,
                        "--no-cache",
                        "--build-args",
                        f"N={i}-{label}",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )  # fmt: skip
                for i in range(SCALE_BUILDS)
            ]
            for proc in procs:
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise SystemExit(f"a build on {rack} failed:\n{err.decode(errors='replace')}")
            timings[label] = round(time.monotonic() - start, 2)
    finally:
        subprocess.run([SLIPWAY, "rack", "stop", "--name", "bench4"], env=env, capture_output=True)
    return {
        "builds": SCALE_BUILDS,
        "run_sleep_s": 3,
        "one_builder_s": timings["one_builder"],
        "three_builders_s": timings["three_builders"],
        "speedup": round(timings["one_builder"] / timings["three_builders"], 2),
    }


CONTEXT_FILES = int(os.environ.get("SLIPWAY_BENCH_CONTEXT_FILES", "10000"))
CONTEXT_MIB = int(os.environ.get("SLIPWAY_BENCH_CONTEXT_MIB", "512"))
UPLOADED = re.compile(
    r"uploaded [0-9a-f]{64}: (?P<entries>\d+) entries, (?P<bytes>\d+) bytes; "
    r"(?P<read>\d+) files read, (?P<sent>\d+) sent \((?P<sent_bytes>\d+) bytes\)"
)


def _context_builds(env: dict[str, str], home: Path, data: Path) -> dict[str, object]:
    """A context of CONTEXT_FILES files, CONTEXT_MIB MiB in all, with a trivial Dockerfile:
    `slipway build` on bench1 first (nothing on the rack yet, an empty digest cache), again
    with nothing changed, and again with one 1 KiB file changed; next to `docker build` of
    the same folder (the classic builder, the CLI's default, which tars the whole folder;
    and BuildKit, which sends only what the Dockerfile uses), measured in this run."""
    app = home / "context"
    size = CONTEXT_MIB * MIB // CONTEXT_FILES
    for i in range(CONTEXT_FILES):
        path = app / f"d{i // 100:03}" / f"f{i % 100:02}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    marker = f"{random.getrandbits(32):08x}"
    (app / "convox.yml").write_text("services:\n  web:\n    build: .\n")
    (app / "Dockerfile").write_text(f"FROM busybox\nRUN echo {marker}\n")
    total = sum(p.stat().st_size for p in app.rglob("*") if p.is_file())
    references: dict[str, object] = {}
    for label, buildkit in (("docker_build_classic", "0"), ("docker_build_buildkit", "1")):
        start = time.monotonic()
        built = subprocess.run(
            ["docker", "build", "--no-cache", "-q", "-t", f"bench-context:{label}", str(app)],
            env={**env, "DOCKER_BUILDKIT": buildkit},
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            # The Docker CLI needs buildx for BuildKit; without it, only the classic
            # builder (the CLI's default here) is a reference.
            if buildkit == "0":
                raise SystemExit(f"docker build of the context failed:\n{built.stderr}")
            references[label] = None
            references[f"{label}_unavailable"] = built.stderr.strip().splitlines()[0][:200]
            continue
        references[label] = round(time.monotonic() - start, 2)
        subprocess.run(["docker", "rmi", f"bench-context:{label}"], capture_output=True)
    debug = {**env, "SLIPWAY_DEBUG": "1"}
    cases: dict[str, dict[str, object]] = {}
    for case in ("first", "no_change", "one_1kib_file_changed"):
        if case == "one_1kib_file_changed":
            (app / "d042" / "f42.bin").write_bytes(os.urandom(1024))
        _reset_peaks(data)
        argv = [SLIPWAY, "build", str(app), "-a", "context", "-r", "bench1"]
        start = time.monotonic()
        # Piped, the status lines go to stderr with the debug records; the log is not needed.
        proc = subprocess.Popen(argv, env=debug, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        started = -1.0
        said: list[bytes] = []
        for raw in proc.stderr:
            said.append(raw)
            if raw.startswith(b"Starting build... OK") and started < 0:
                started = time.monotonic() - start
        err = b"".join(said).decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
        whole = time.monotonic() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"slipway build of the context failed:\n{err[-3000:]}")
        match = UPLOADED.search(err)
        figures = {k: int(v) for k, v in match.groupdict().items()} if match else {}
        cases[case] = {
            "seconds": round(whole, 2),
            "to_starting_build_s": round(started, 3),
            "files_read": figures.get("read", -1),
            "files_sent": figures.get("sent", -1),
            "bytes_sent": figures.get("sent_bytes", -1),
            "sent_share_of_context": round(figures.get("sent_bytes", 0) / total, 6),
            "client_peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "service_peak_rss_mib": _service_peaks(data),
        }
    first = float(cases["first"]["seconds"])  # type: ignore[arg-type]
    ratios = {
        f"first_vs_{label}": round(float(seconds) / first, 2)  # type: ignore[arg-type]
        for label, seconds in references.items()
        if label.startswith("docker_build_") and isinstance(seconds, float)
    }
    return {
        "files": CONTEXT_FILES,
        "context_bytes": total,
        "dockerfile": "FROM busybox + one RUN",
        **references,
        **cases,
        **ratios,
    }


def _registry_hosts(home: Path) -> list[str]:
    try:
        config = json.loads((home / "config" / "slipway" / "config.json").read_text())
    except (OSError, ValueError):
        return []
    return [f"127.0.0.1:{r['local']['port'] + 4}/" for r in config.get("racks", {}).values()]


def _remove_images(hosts: list[str]) -> None:
    """The bench's images are gigabytes: remove every local name of its racks' registries."""
    names = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    doomed = [n for n in names if any(n.startswith(h) for h in hosts)]
    if doomed:
        subprocess.run(["docker", "rmi", "-f", *doomed], capture_output=True)


if __name__ == "__main__":
    raise SystemExit(main())
