"""`slipway env`, `releases` and `deploy` against a fake rack: exact output, exit statuses."""

from __future__ import annotations

import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from client.cli.commands.releases import release_info, releases_table
from client.cli.config import ClientConfig, RackEntry
from client.cli.main import main
from client.cli.render import key_blocks
from client.kernel import types
from client.kernel.environment import apply_change
from client.kernel.errors import FailedPrecondition, NotFound
from tests.client.cli.fakes import FakeMetadata, FakeRack

B = "BNEWBUILDAA"
R = "RNEWRELEASE"
NOW = 1_700_000_000.0


@dataclass
class ReleaseMetadata(FakeMetadata):
    """FakeMetadata plus apps and releases, with UpdateEnv's rules (`apply_change`)."""

    apps: dict[str, types.App] = field(default_factory=dict)
    releases: list[types.Release] = field(default_factory=list)  # oldest first
    updates: list[tuple[str, dict[str, str], list[str]]] = field(default_factory=list)
    ids: int = 0

    def add_release(self, app: str, **kw: Any) -> types.Release:
        self.apps.setdefault(app, types.App(app))
        self.ids += 1
        kw.setdefault("id", f"R{self.ids:010d}")
        release = types.Release(app=app, **kw)
        self.releases.append(release)
        return release

    def get_app(self, name: str) -> types.App:
        if name not in self.apps:
            raise NotFound.of("app", name)
        return self.apps[name]

    def list_releases(self, app: str, limit: int = 10) -> list[types.Release]:
        self.get_app(app)
        return [r for r in reversed(self.releases) if r.app == app][:limit]

    def get_release(self, release_id: str, app: str = "") -> types.Release:
        for release in self.releases:
            if release.id == release_id and (not app or release.app == app):
                return release
        raise NotFound.of("release", release_id)

    def promote_release(self, app: str, release_id: str = "") -> types.App:
        self.get_app(app)
        if release_id:
            release = self.get_release(release_id, app)
        else:
            mine = self.list_releases(app, 1)
            if not mine:
                raise FailedPrecondition(f"app {app} has no releases to promote")
            release = mine[0]
        self.apps[app] = replace(self.apps[app], release=release.id)
        return self.apps[app]

    def update_env(
        self, app: str, set_vars: Mapping[str, str], unset: Sequence[str] = ()
    ) -> types.Release:
        if app not in self.apps:
            raise NotFound.no_app(app)  # nothing creates an app
        self.updates.append((app, dict(set_vars), list(unset)))
        latest = self.list_releases(app, 1)
        base = latest[0] if latest else types.Release(id="", app=app)
        change = apply_change(base.env, set_vars, unset)
        return self.add_release(
            app,
            build=base.build,
            env=change.env,
            manifest=base.manifest,
            description=change.description,
        )


class ReleaseRack(FakeRack):
    def __init__(self) -> None:
        super().__init__()
        self.metadata: ReleaseMetadata = ReleaseMetadata(self.builds)


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("client.cli.commands.follow.RECONNECT_DELAYS", (0.0,) * 5)
    for name in ("SLIPWAY_RACK", "SLIPWAY_HOST", "SLIPWAY_TOKEN", "SLIPWAY_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def rack() -> ReleaseRack:
    return ReleaseRack()


@pytest.fixture
def run(rack: ReleaseRack, tmp_path: Path) -> Any:
    config_path = tmp_path / "config" / "config.json"
    config = ClientConfig()
    config.add(RackEntry("local", "127.0.0.1:7400", "t1"), make_current=True)
    config.save(config_path)
    project = tmp_path / "myapp"
    project.mkdir()
    (project / "convox.yml").write_text("services:\n  web:\n    build: .\n")
    (project / "Dockerfile").write_text("FROM busybox\n")
    connected: list[str] = []

    def connect(host: str, token: str, ca: bytes | None = None) -> ReleaseRack:
        connected.append(host)
        return rack

    def invoke(*argv: str) -> Run:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            list(argv),
            stdout=out,
            stderr=err,
            env={},
            connect=connect,  # type: ignore[arg-type]
            config_path=config_path,
            cwd=project,
        )
        return Run(code, out.getvalue(), err.getvalue())

    invoke.connected = connected  # type: ignore[attr-defined]
    return invoke


# --- rendering -----------------------------------------------------------------------------


def test_key_blocks_indent_continuation_lines_to_the_value_column() -> None:
    assert key_blocks([("Id", ["R1"]), ("Env", ["A=1", "B=2"]), ("Empty", [])]) == [
        "Id     R1",
        "Env    A=1",
        "       B=2",
        "Empty",
    ]


def test_releases_table() -> None:
    releases = [
        types.Release("RNEWER", "a", build="", created=NOW - 30, description="env add:A"),
        types.Release("RTWOAAAAAAA", "a", build="BX", created=NOW - 7200, description="b one"),
        types.Release("R3", "a", build="BYYYYYYYYYY", created=NOW - 86400),
    ]
    assert releases_table(releases, active="RTWOAAAAAAA", now=NOW) == [
        "ID           STATUS  BUILD        CREATED      DESCRIPTION",
        "RNEWER                            now          env add:A",
        "RTWOAAAAAAA  active  BX           2 hours ago  b one",
        "R3                   BYYYYYYYYYY  1 day ago",
    ]
    assert releases_table([], active="") == ["ID  STATUS  BUILD  CREATED  DESCRIPTION"]


def test_release_info() -> None:
    release = types.Release(
        "RINFOAAAAAA",
        "a",
        build="BINFOAAAAAA",
        env={"ZED": "last", "A": "x=y, z", "M": "two\nlines"},
        created=NOW - 120,
        description="env add:A",
    )
    assert release_info(release, now=NOW) == [
        "Id           RINFOAAAAAA",
        "Build        BINFOAAAAAA",
        "Created      2 minutes ago",
        "Description  env add:A",
        "Env          A=x=y, z",
        "             M=two",
        "             lines",
        "             ZED=last",
    ]
    bare = release_info(types.Release("R1", "a"), now=NOW)
    assert bare == ["Id           R1", "Build", "Created", "Description", "Env"]


# --- env -----------------------------------------------------------------------------------


def test_env_prints_the_latest_release_sorted(run: Any, rack: ReleaseRack) -> None:
    rack.metadata.add_release("myapp", env={"OLD": "gone"})
    rack.metadata.add_release("myapp", env={"b": "2", "A": "a=b c", "Z": ""})
    rack.metadata.add_release("other", env={"OTHER": "x"})
    result = run("env")
    assert (result.code, result.out, result.err) == (0, "A=a=b c\nZ=\nb=2\n", "")
    assert run("env", "-a", "other").out == "OTHER=x\n"


def test_env_of_an_app_without_releases_prints_nothing(run: Any, rack: ReleaseRack) -> None:
    rack.metadata.apps["myapp"] = types.App("myapp")
    assert (run("env").code, run("env").out) == (0, "")
    unknown = run("env", "-a", "ghost")
    assert (unknown.code, unknown.err) == (
        1,
        "ERROR: app not found: ghost\n",
    )


def test_env_set(run: Any, rack: ReleaseRack) -> None:
    rack.metadata.add_release("myapp", build="BOLD", env={"X": "1"}, manifest="m")
    result = run("env", "set", 'NEW=a=b, "c"', "X=2", "EMPTY=")
    assert result.code == 0, result.err
    release = rack.metadata.releases[-1]
    assert (result.out, result.err) == (f"Release: {release.id}\n", "Updating environment... OK\n")
    assert rack.metadata.updates == [("myapp", {"NEW": 'a=b, "c"', "X": "2", "EMPTY": ""}, [])]
    assert release.description == "env add:NEW,EMPTY change:X"
    assert (release.build, release.manifest) == ("BOLD", "m")
    assert rack.metadata.apps["myapp"].release == ""  # not promoted


def test_env_set_on_an_unknown_app_says_how_to_create_it(run: Any, rack: ReleaseRack) -> None:
    result = run("env", "set", "A=1", "-a", "fresh")
    assert (result.code, result.err) == (
        1,
        "Updating environment... \n"
        "ERROR: app not found: fresh (create it with: slipway apps create fresh)\n",
    )
    assert "fresh" not in rack.metadata.apps and rack.metadata.releases == []


def test_env_set_promote(run: Any, rack: ReleaseRack) -> None:
    rack.metadata.create_app("fresh")
    result = run("env", "set", "A=1", "--promote", "-a", "fresh")
    assert result.code == 0, result.err
    release = rack.metadata.releases[-1]
    assert result.out == f"Release: {release.id}\n"
    assert result.err == f"Updating environment... OK\nPromoting {release.id}... OK\n"
    assert rack.metadata.apps["fresh"].release == release.id


NAME_RULE = "(must match ^[A-Za-z_][A-Za-z0-9_]*$)"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["env", "set", "A=1", "NOEQUALS"], "'NOEQUALS' (want KEY=VALUE)"),
        (["env", "set", "1A=x"], f"'1A' {NAME_RULE}"),
        (["env", "set", "=x"], f"'' {NAME_RULE}"),
        (["env", "unset", "A-B"], f"'A-B' {NAME_RULE}"),
    ],
)
def test_invalid_variables_are_refused_before_the_rack_is_asked(
    run: Any, rack: ReleaseRack, argv: list[str], error: str
) -> None:
    result = run(*argv)
    assert (result.code, result.out) == (1, "")
    assert result.err == f"ERROR: invalid environment variable: {error}\n"
    assert run.connected == [] and rack.metadata.releases == []


def test_env_unset(run: Any, rack: ReleaseRack) -> None:
    rack.metadata.add_release("myapp", env={"A": "1", "B": "2", "C": "3"})
    result = run("env", "unset", "C", "A", "--promote")
    assert result.code == 0, result.err
    release = rack.metadata.releases[-1]
    assert result.out == f"Release: {release.id}\n"
    assert result.err == f"Updating environment... OK\nPromoting {release.id}... OK\n"
    assert (release.env, release.description) == ({"B": "2"}, "env remove:C,A")


def test_env_unset_of_a_key_that_is_not_set(run: Any, rack: ReleaseRack) -> None:
    rack.metadata.add_release("myapp", env={"A": "1"})
    result = run("env", "unset", "NOPE")
    assert (result.code, result.out) == (1, "")
    assert result.err == "Updating environment... \nERROR: env var not set: NOPE\n"
    assert len(rack.metadata.releases) == 1


def test_env_usage_errors(run: Any) -> None:
    for argv, missing in ((["env", "set"], "KEY=VALUE"), (["env", "unset"], "KEY")):
        result = run(*argv)
        assert result.code == 1
        assert (
            result.err.splitlines()[-1] == f"ERROR: the following arguments are required: {missing}"
        )


# --- releases ------------------------------------------------------------------------------


def test_releases_list_marks_the_active_one(run: Any, rack: ReleaseRack) -> None:
    now = time.time()
    first = rack.metadata.add_release(
        "myapp", build="BFIRSTAAAAA", created=now - 7200, description="b1"
    )
    second = rack.metadata.add_release(
        "myapp", build="BFIRSTAAAAA", created=now - 5, description="env add:X"
    )
    rack.metadata.add_release("other", created=now)
    rack.metadata.promote_release("myapp", first.id)
    result = run("releases")
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [
        "ID           STATUS  BUILD        CREATED      DESCRIPTION",
        f"{second.id}          BFIRSTAAAAA  now          env add:X",
        f"{first.id}  active  BFIRSTAAAAA  2 hours ago  b1",
    ]
    assert run("releases", "--limit", "1").out.splitlines()[1:] == [
        f"{second.id}          BFIRSTAAAAA  now      env add:X"
    ]
    bad = run("releases", "--limit", "0")
    assert (bad.code, bad.err) == (1, "ERROR: --limit must be at least 1, not 0\n")
    assert run("releases", "-a", "ghost").err == "ERROR: app not found: ghost\n"


def test_releases_info(run: Any, rack: ReleaseRack) -> None:
    release = rack.metadata.add_release(
        "myapp",
        build="BINFOAAAAAA",
        env={"B": "2", "A": "x y"},
        created=time.time() - 90,
        description="env add:B,A",
    )
    result = run("releases", "info", release.id)
    assert (result.code, result.err) == (0, "")
    assert result.out.splitlines() == [
        f"Id           {release.id}",
        "Build        BINFOAAAAAA",
        "Created      1 minute ago",
        "Description  env add:B,A",
        "Env          A=x y",
        "             B=2",
    ]


def test_releases_info_of_an_unknown_or_foreign_release(run: Any, rack: ReleaseRack) -> None:
    theirs = rack.metadata.add_release("theirs")
    rack.metadata.apps["myapp"] = types.App("myapp")
    for ident in ("RNOSUCHTHING", theirs.id):
        result = run("releases", "info", ident)
        assert (result.code, result.out, result.err) == (
            1,
            "",
            f"ERROR: release not found: {ident}\n",
        )


def test_releases_promote(run: Any, rack: ReleaseRack) -> None:
    first = rack.metadata.add_release("myapp")
    latest = rack.metadata.add_release("myapp")
    result = run("releases", "promote")
    assert (result.code, result.out, result.err) == (0, "", f"Promoting {latest.id}... OK\n")
    assert rack.metadata.apps["myapp"].release == latest.id
    assert run("releases", "promote", first.id).err == f"Promoting {first.id}... OK\n"
    assert rack.metadata.apps["myapp"].release == first.id


def test_releases_promote_refusals(run: Any, rack: ReleaseRack) -> None:
    rack.metadata.apps["empty"] = types.App("empty")
    rack.metadata.add_release("myapp")
    cases = [
        (["releases", "promote", "-a", "empty"], "app empty has no releases to promote"),
        (["releases", "promote", "RNOSUCHTHING"], "release not found: RNOSUCHTHING"),
        (
            ["releases", "promote", "-a", "ghost"],
            "app not found: ghost",
        ),
    ]
    for argv, error in cases:
        result = run(*argv)
        assert (result.code, result.out, result.err) == (1, "", f"ERROR: {error}\n")
    assert rack.metadata.apps["myapp"].release == ""


# --- deploy --------------------------------------------------------------------------------


def _complete(app: str = "myapp") -> types.Build:
    return types.Build(id=B, app=app, status="complete", release=R, started=1.0, ended=2.0)


def _stream(final: types.Build, lines: Sequence[str] = ("Building: .",)) -> list[Any]:
    running = types.Build(id=B, app=final.app, status="running")
    return [running, *[types.LogLine(i, text) for i, text in enumerate(lines)], final]


def test_deploy_builds_then_promotes_its_release(run: Any, rack: ReleaseRack) -> None:
    rack.metadata.add_release("myapp", id=R, build=B)
    # Someone else's newer build and release of the same app must not be promoted.
    rack.add(id="BOTHERAAAAA", app="myapp", status="complete", release="ROTHER", created=9e9)
    rack.metadata.add_release("myapp", id="ROTHER", build="BOTHERAAAAA")
    rack.builder.streams.append(_stream(_complete()))
    rack.builds[B] = _complete()
    result = run("deploy", "-d", "shipped", "--no-cache", "--build-args", "A=1")
    assert result.code == 0, result.err
    assert result.out == f"Building: .\nBuild:   {B}\nRelease: {R}\n"
    assert result.err == (
        "Packaging source... OK\n"
        "Uploading source... OK\n"
        "Starting build... OK\n"
        f"Promoting {R}... OK\n"
    )
    assert rack.metadata.apps["myapp"].release == R
    options = rack.builder.started[0]
    assert (options.description, options.no_cache, options.build_args) == (
        "shipped",
        True,
        {"A": "1"},
    )


def test_deploy_with_id_prints_only_the_release(run: Any, rack: ReleaseRack) -> None:
    rack.metadata.add_release("other", id=R, build=B)
    rack.builder.streams.append(_stream(_complete("other")))
    rack.builds[B] = _complete("other")
    result = run("deploy", "--id", "-a", "other")
    assert (result.code, result.out) == (0, f"{R}\n")
    assert result.err.endswith(f"Release: {R}\nPromoting {R}... OK\n")
    assert rack.metadata.apps["other"].release == R


@pytest.mark.parametrize(
    ("final", "error"),
    [
        (
            replace(_complete(), status="failed", release="", reason="exit 3"),
            "build failed: exit 3",
        ),
        (replace(_complete(), status="cancelled", release=""), "build cancelled"),
    ],
)
def test_a_build_that_does_not_complete_promotes_nothing(
    run: Any, rack: ReleaseRack, final: types.Build, error: str
) -> None:
    rack.metadata.add_release("myapp", id=R)
    rack.builder.streams.append(_stream(final, ["oops"]))
    rack.builds[B] = final
    result = run("deploy")
    assert (result.code, result.err.splitlines()[-1]) == (1, f"ERROR: {error}")
    assert "oops\n" in result.out and "Promoting" not in result.out + result.err
    assert rack.metadata.apps["myapp"].release == ""


def test_deploy_has_the_build_flags(run: Any) -> None:
    help_text = run("deploy", "--help").out
    for flag in (
        "--description",
        "--manifest",
        "--no-cache",
        "--development",
        "--build-args",
        "--id",
    ):
        assert flag in help_text
    result = run("deploy", "nope")
    assert (result.code, result.err) == (1, "ERROR: no such directory: nope\n")


def test_releases_and_env_json(run: Any, rack: ReleaseRack) -> None:
    import json

    first = rack.metadata.add_release("myapp", env={"A": "1"}, created=NOW, description="one")
    second = rack.metadata.add_release(
        "myapp", build="BSOMEBUILDA", env={"B": "x=y", "A": "2"}, created=NOW + 60
    )
    rack.metadata.promote_release("myapp", first.id)
    listed = json.loads(run("releases", "--json").out)
    assert [(r["id"], r["status"]) for r in listed] == [(second.id, ""), (first.id, "active")]
    assert listed[0] == {
        "id": second.id,
        "app": "myapp",
        "status": "",
        "build": "BSOMEBUILDA",
        "description": "",
        "created": "2023-11-14T22:14:20Z",
        "env": {"A": "2", "B": "x=y"},
        "manifest": "",
    }
    assert json.loads(run("releases", "info", first.id, "--json").out)["status"] == "active"
    assert json.loads(run("env", "--json").out) == {"A": "2", "B": "x=y"}
