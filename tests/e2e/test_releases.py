"""`slipway env`, `releases` and `deploy` end to end: a real rack, engine, registry, SQLite."""

from __future__ import annotations

import re
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.conftest import RackHandle, missing_app
from tests.helpers import run_docker, write_files

pytestmark = pytest.mark.docker

RELEASE_LINE = re.compile(r"^Release: (R[A-Z]{10})$", re.M)
BUILD_LINE = re.compile(r"^Build:   (B[A-Z]{10})$", re.M)
TRICKY = 'he said "hi", it\'s a=b  c, $HOME'


def _app(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def _new_app(rack: RackHandle, prefix: str) -> str:
    """A new app's name, the app created on `rack` (nothing creates one implicitly)."""
    name = _app(prefix)
    rack.ok("apps", "create", name)
    return name


def _release_of(out: str) -> str:
    found = RELEASE_LINE.search(out)
    assert found, out
    return found.group(1)


def _row(*cells: str, widths: tuple[int, ...]) -> str:
    """A `releases` line: cells padded to `widths` but the last, two spaces apart."""
    padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=True)] + [cells[-1]]
    return "  ".join(padded).rstrip()


def _ids(rack: RackHandle, app: str) -> list[str]:
    lines = rack.ok("releases", "-a", app, "--limit", "100").splitlines()[1:]
    return [line.split()[0] for line in lines]


def test_env_set_unset_and_releases(rack: RackHandle) -> None:
    app = _app("env")

    # A change to an app that does not exist is refused and creates nothing.
    for argv in (["env", "set", "FOO=1", "BAR=a=b"], ["env", "unset", "FOO"]):
        res = rack.slipway(*argv, "-a", app)
        assert (res.code, res.err.splitlines()[-1]) == (1, missing_app(app)), res.err
        assert "Traceback" not in res.err
    assert app not in rack.apps()

    # Once created, the first change makes a release without a build.
    rack.ok("apps", "create", app)
    # Off a terminal the status lines go to stderr; the new release's id to stdout.
    res = rack.slipway("env", "set", "FOO=1", "BAR=a=b", "-a", app)
    first = _release_of(res.out)
    assert (res.out, res.err) == (f"Release: {first}\n", "Updating environment... OK\n")
    assert rack.ok("env", "-a", app) == "BAR=a=b\nFOO=1\n"

    res = rack.slipway("env", "set", "FOO=2", "NEW=x", "-a", app, "--promote")
    second = _release_of(res.out)
    assert res.out == f"Release: {second}\n"
    assert res.err == f"Updating environment... OK\nPromoting {second}... OK\n"

    res = rack.slipway("env", "unset", "BAR", "-a", app)
    third = _release_of(res.out)
    assert (res.out, res.err) == (f"Release: {third}\n", "Updating environment... OK\n")
    assert rack.ok("env", "-a", app) == "FOO=2\nNEW=x\n"

    widths = (11, 6, 5, 7)
    assert rack.ok("releases", "-a", app).splitlines() == [
        _row("ID", "STATUS", "BUILD", "CREATED", "DESCRIPTION", widths=widths),
        _row(third, "", "", "now", "env remove:BAR", widths=widths),
        _row(second, "active", "", "now", "env add:NEW change:FOO", widths=widths),
        _row(first, "", "", "now", "env add:FOO,BAR", widths=widths),
    ]
    assert rack.ok("releases", "-a", app, "--limit", "1").splitlines()[1:] == [
        _row(third, "", "", "now", "env remove:BAR", widths=widths)
    ]

    assert rack.ok("releases", "info", second, "-a", app).splitlines() == [
        f"Id           {second}",
        "Build",
        "Created      now",
        "Description  env add:NEW change:FOO",
        "Env          BAR=a=b",
        "             FOO=2",
        "             NEW=x",
    ]


def test_values_keep_every_character(rack: RackHandle) -> None:
    app = _new_app(rack, "values")
    multi = "line one\nline two"
    rack.ok("env", "set", f"TRICKY={TRICKY}", f"MULTI={multi}", "EMPTY=", "-a", app)
    assert rack.ok("env", "-a", app) == f"EMPTY=\nMULTI={multi}\nTRICKY={TRICKY}\n"


def test_bad_input_creates_nothing(rack: RackHandle) -> None:
    app = _new_app(rack, "bad")
    rack.ok("env", "set", "A=1", "-a", app)
    before = _ids(rack, app)
    bad, rule = "invalid environment variable:", "(must match ^[A-Za-z_][A-Za-z0-9_]*$)"
    cases = [
        (["env", "set", "B=2", "NOEQUALS"], f"{bad} 'NOEQUALS' (want KEY=VALUE)"),
        (["env", "set", "1B=2"], f"{bad} '1B' {rule}"),
        (["env", "set", "B-C=2"], f"{bad} 'B-C' {rule}"),
        (["env", "unset", "NOT-VALID"], f"{bad} 'NOT-VALID' {rule}"),
        (["env", "unset", "A", "MISSING"], "env var not set: MISSING"),
    ]
    for argv, error in cases:
        res = rack.slipway(*argv, "-a", app)
        assert (res.code, res.err.splitlines()[-1]) == (1, f"ERROR: {error}"), res.err
        assert "Traceback" not in res.err
    assert _ids(rack, app) == before
    assert rack.ok("env", "-a", app) == "A=1\n"


def test_concurrent_env_sets_each_make_a_release_and_lose_nothing(rack: RackHandle) -> None:
    app = _new_app(rack, "race")
    rack.ok("env", "set", "BASE=0", "-a", app)
    count = 6
    with ThreadPoolExecutor(count) as pool:
        results = list(
            pool.map(lambda i: rack.slipway("env", "set", f"K{i}={i}", "-a", app), range(count))
        )
    assert [r.code for r in results] == [0] * count, [r.err for r in results]
    assert len({_release_of(r.out) for r in results}) == count
    assert len(_ids(rack, app)) == count + 1
    expected = "".join(f"K{i}={i}\n" for i in range(count))
    assert rack.ok("env", "-a", app) == "BASE=0\n" + expected


def test_promote(rack: RackHandle, tmp_path: Path) -> None:
    app = _new_app(rack, "promote")
    first = _release_of(rack.ok("env", "set", "A=1", "-a", app))
    latest = _release_of(rack.ok("env", "set", "A=2", "-a", app))

    res = rack.slipway("releases", "promote", "-a", app)
    assert (res.code, res.out, res.err) == (0, "", f"Promoting {latest}... OK\n")
    assert rack.ok("releases", "-a", app).splitlines()[1].split()[:2] == [latest, "active"]
    res = rack.slipway("releases", "promote", first, "-a", app)
    assert (res.code, res.out, res.err) == (0, "", f"Promoting {first}... OK\n")
    assert rack.ok("releases", "-a", app).splitlines()[2].split()[:2] == [first, "active"]

    res = rack.slipway("releases", "promote", "RNOSUCHTHING", "-a", app)
    assert (res.code, res.out, res.err) == (1, "", "ERROR: release not found: RNOSUCHTHING\n")
    res = rack.slipway("releases", "info", "RNOSUCHTHING", "-a", app)
    assert (res.code, res.err) == (1, "ERROR: release not found: RNOSUCHTHING\n")

    # An app whose only build failed has no release at all.
    empty = _new_app(rack, "empty")
    needs_env = {"convox.yml": "services:\n  web:\n    environment: [NEEDED]\n"}
    failed = rack.slipway("build", str(write_files(tmp_path / "src", needs_env)), "-a", empty)
    assert (failed.code, failed.err.splitlines()[-1]) == (
        1,
        "ERROR: build failed: required env: NEEDED",
    )
    res = rack.slipway("releases", "promote", "-a", empty)
    assert (res.code, res.err) == (1, f"ERROR: app {empty} has no releases to promote\n")
    assert rack.ok("env", "-a", empty) == ""
    res = rack.slipway("releases", "-a", "nosuchapp")
    assert (res.code, res.err) == (1, "ERROR: app not found: nosuchapp\n")


def test_build_args_come_from_the_app_env(rack: RackHandle, tmp_path: Path) -> None:
    app = _new_app(rack, "args")
    rack.ok("env", "set", f"GREETING={TRICKY}", "MULTI=one\ntwo", "UNDECLARED=x", "-a", app)
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                "FROM busybox\nARG GREETING\nARG MULTI\n"
                'RUN echo "$GREETING" > /v && echo "$MULTI" > /m && echo "[$UNDECLARED]" > /u\n'
            ),
        },
    )
    out = rack.ok("build", str(src), "-a", app, "-d", "with args")
    build_id = BUILD_LINE.search(out).group(1)  # type: ignore[union-attr]
    release = _release_of(out)

    image = f"{rack.registry}/{app}:web.{build_id}"
    subprocess.run(["docker", "rmi", image], capture_output=True)
    run_docker("pull", image)
    assert run_docker("run", "--rm", image, "cat", "/v", "/m", "/u") == f"{TRICKY}\none\ntwo\n[]\n"

    # The build's release carries the environment it was built with.
    info = rack.ok("releases", "info", release, "-a", app).splitlines()
    assert info[1] == f"Build        {build_id}"
    assert info[3] == "Description  with args"
    assert info[4:] == [
        f"Env          GREETING={TRICKY}",
        "             MULTI=one",
        "             two",
        "             UNDECLARED=x",
    ]


def test_deploy_builds_and_promotes(rack: RackHandle, tmp_path: Path) -> None:
    app = _new_app(rack, "deploy")
    marker = secrets.token_hex(4)
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": f"FROM busybox\nRUN echo {marker} > /m\n",
        },
    )
    res = rack.slipway("deploy", str(src), "-a", app, "-d", "shipped")
    assert res.code == 0, res
    build_id = BUILD_LINE.search(res.out).group(1)  # type: ignore[union-attr]
    release = _release_of(res.out)
    # The build log and the ids on stdout; the status lines, the promotion's too, on stderr.
    assert res.out.splitlines()[-2:] == [f"Build:   {build_id}", f"Release: {release}"]
    assert res.err.splitlines() == [
        "Packaging source... OK",
        "Uploading source... OK",
        "Starting build... OK",
        f"Promoting {release}... OK",
    ]
    table = rack.ok("releases", "-a", app).splitlines()
    assert re.split(r"  +", table[1]) == [release, "active", build_id, "now", "shipped"]

    # --id: only the release on stdout, the rest (the promotion included) on stderr.
    res = rack.slipway("deploy", str(src), "-a", app, "--id")
    assert res.code == 0, res.err
    again = res.out.strip()
    assert re.fullmatch(r"R[A-Z]{10}", again) and again != release
    assert res.err.splitlines()[-1] == f"Promoting {again}... OK"
    assert rack.ok("releases", "-a", app).splitlines()[1].split()[:2] == [again, "active"]

    # A failed build promotes nothing: the active release stays.
    (src / "Dockerfile").write_text("FROM busybox\nRUN exit 3\n")
    res = rack.slipway("deploy", str(src), "-a", app)
    assert res.code == 1 and res.err.splitlines()[-1].startswith("ERROR: build failed: ")
    assert "Promoting" not in res.out + res.err
    table = rack.ok("releases", "-a", app).splitlines()
    assert [line.split()[:2] for line in table[1:3]] == [[again, "active"], [release, build_id]]
