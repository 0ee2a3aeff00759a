"""The `slipway` command line against a fake rack: parsing, output, exit statuses."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from client.cli.commands.build import parse_build_args
from client.cli.config import ClientConfig
from client.cli.main import build_parser, extract_globals, main, value_options
from client.kernel import types
from client.kernel.errors import (
    InvalidArgument,
    NotFound,
    Unauthenticated,
    Unavailable,
    Unreachable,
)
from tests.client.cli.fakes import FakeRack
from tests.helpers import settle

B = "BNEWBUILDAA"


def _done(rack: FakeRack, status: str = "complete", **kw: Any) -> types.Build:
    fields: dict[str, Any] = {
        "id": B,
        "app": "myapp",
        "status": status,
        "started": 1.0,
        "ended": 2.0,
    }
    if status == "complete":
        fields["release"] = "RNEWRELEASE"
    fields.update(kw)
    return types.Build(**fields)


def _stream(rack: FakeRack, lines: list[str], final: types.Build, start: int = 0) -> list[Any]:
    return [
        types.Build(id=B, app="myapp", status="running"),
        *[types.LogLine(offset=start + i, text=t) for i, t in enumerate(lines)],
        final,
    ]


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "rest", "app", "rack"),
    [
        (["-a", "x", "builds"], ["builds"], "x", None),
        (["builds", "-a", "x"], ["builds"], "x", None),
        (["builds", "info", "B1", "-a", "x", "-r", "y"], ["builds", "info", "B1"], "x", "y"),
        (["--app=x", "builds", "--rack=y"], ["builds"], "x", "y"),
        (["builds", "-ax", "-ry"], ["builds"], "x", "y"),
        (["build", "-d", "-a", "-a", "z"], ["build", "-d=-a"], "z", None),
        (["login", "h:1", "--token", "-x=y"], ["login", "h:1", "--token=-x=y"], None, None),
        (["build", "--", "-a", "x"], ["build", "--", "-a", "x"], None, None),
        (["builds", "-a"], ["builds", "-a"], None, None),
        (["login", "h:1", "--ca", "-ca.pem"], ["login", "h:1", "--ca=-ca.pem"], None, None),
        (["build", "--secret", "-id"], ["build", "--secret=-id"], None, None),
    ],
)
def test_extract_globals(
    argv: list[str], rest: list[str], app: str | None, rack: str | None
) -> None:
    import io

    values = value_options(build_parser(io.StringIO(), io.StringIO()))
    assert extract_globals(argv, values) == (rest, app, rack)
    assert {"--no-cache", "--json", "--id", "-a", "-r"}.isdisjoint(values)  # flags, globals


def test_build_args() -> None:
    env = {"TOKEN": "from env", "EMPTY": ""}
    assert parse_build_args(["A=1", "B=x=y, z", "TOKEN", "EMPTY", "C="], env) == {
        "A": "1",
        "B": "x=y, z",
        "TOKEN": "from env",
        "EMPTY": "",
        "C": "",
    }
    with pytest.raises(InvalidArgument, match="build arg MISSING is not set in the environment"):
        parse_build_args(["MISSING"], env)
    with pytest.raises(InvalidArgument, match="invalid build arg"):
        parse_build_args(["=v"], env)


def test_app_flag_before_and_after_the_command(run: Any, rack: FakeRack) -> None:
    rack.add(id="BONE", app="other", status="complete", created=time.time())
    for argv in (
        ["-a", "other", "builds"],
        ["builds", "-a", "other"],
        ["builds", "--app", "other"],
    ):
        result = run(*argv)
        assert result.code == 0, result.err
        assert result.out.splitlines()[1].startswith("BONE  complete")


def test_rack_flag_picks_the_rack(run: Any) -> None:
    run("builds", "-r", "remote")
    run("builds")
    assert run.connected == [("remote.example:443", "t2"), ("127.0.0.1:7400", "t1")]


def test_unknown_rack(run: Any) -> None:
    result = run("builds", "-r", "nope")
    assert (result.code, result.err) == (1, "ERROR: rack not found: nope (see 'slipway racks')\n")


def test_default_app_is_the_folder_name(run: Any, rack: FakeRack, tmp_path: Path) -> None:
    rack.add(id="BMINE", app="myapp", status="complete", created=time.time())
    assert "BMINE" in run("builds").out
    bad = tmp_path / "Bad_Name"
    bad.mkdir()
    result = run("builds", cwd=bad)
    assert (
        result.code == 1
        and "invalid app name: 'Bad_Name'" in result.err
        and "-a NAME" in result.err
    )


def test_usage_errors_are_one_error_line_and_exit_1(run: Any) -> None:
    result = run("builds", "info")
    assert result.code == 1
    assert result.err.splitlines()[0].startswith("usage: slipway builds info")
    assert result.err.splitlines()[-1] == "ERROR: the following arguments are required: BUILD"
    bad = run("builds", "--limit", "abc")
    assert (bad.code, bad.err.splitlines()[-1]) == (
        1,
        "ERROR: argument --limit: invalid int value: 'abc'",
    )
    assert run("frobnicate").code == 1


def test_help_goes_to_stdout(run: Any) -> None:
    result = run("--help")
    assert result.code == 0 and "builds" in result.out and result.err == ""


# --- build -------------------------------------------------------------------------------


def test_build_output(run: Any, rack: FakeRack, project: Path) -> None:
    rack.builder.streams.append(
        _stream(rack, ["Building: .", "Step 1/1 : FROM busybox"], _done(rack))
    )
    rack.builds[B] = _done(rack)  # what get_build returns once the stream ends
    result = run("build", "-d", "first", "--build-args", "A=1", "--no-cache")
    assert result.code == 0, result.err
    # Off a terminal the status lines go to stderr; stdout carries the log and the ids.
    assert result.out == (
        "Building: .\nStep 1/1 : FROM busybox\nBuild:   BNEWBUILDAA\nRelease: RNEWRELEASE\n"
    )
    assert result.err == "Packaging source... OK\nUploading source... OK\nStarting build... OK\n"
    upload = rack.archive.uploads[0]
    assert upload["app"] == "myapp"
    assert sorted(upload["names"]) == ["Dockerfile", "convox.yml"]
    assert sorted(rack.archive.blobs.values()) == sorted(
        (project / name).read_bytes() for name in ("Dockerfile", "convox.yml")
    )
    options = rack.builder.started[0]
    assert (options.app, options.description, options.no_cache) == ("myapp", "first", True)
    assert options.build_args == {"A": "1"} and options.manifest == "convox.yml"
    # Acks report what was shown: here, both lines, once the build ended.
    assert rack.builder.followers[0].acks == [2] and rack.builder.followers[0].closed


def test_a_rebuild_sends_only_what_changed(run: Any, rack: FakeRack, project: Path) -> None:
    for _ in range(3):
        rack.builder.streams.append(_stream(rack, [], _done(rack)))
    rack.builds[B] = _done(rack)
    settle(project)  # files changed just before a walk are never remembered
    assert run("build").code == 0
    first = dict(rack.archive.blobs)
    assert len(first) == 2 and len(rack.archive.uploads) == 1

    # Nothing changed: the rack has this very context; nothing is asked, sent or committed.
    asked = len(rack.archive.asked)
    assert run("build").code == 0
    assert rack.archive.blobs == first and len(rack.archive.uploads) == 1
    assert len(rack.archive.asked) == asked
    assert rack.builder.started[1].archive == rack.builder.started[0].archive

    # One file changed: that file alone travels, and a new context is committed.
    (project / "Dockerfile").write_text("FROM busybox\nRUN true\n")
    settle(project)
    assert run("build").code == 0
    assert set(rack.archive.blobs) - set(first) == {
        hashlib.sha256(b"FROM busybox\nRUN true\n").hexdigest()
    }
    assert len(rack.archive.uploads) == 2
    assert rack.builder.started[2].archive == rack.archive.uploads[1]["id"]


def test_build_acks_shown_lines_in_batches(run: Any, rack: FakeRack, project: Path) -> None:
    lines = [f"line-{i}" for i in range(250)]
    rack.builder.streams.append(_stream(rack, lines, _done(rack)))
    rack.builds[B] = _done(rack)
    result = run("build")
    assert result.code == 0, result.err
    assert result.out.count("line-") == 250
    assert rack.builder.followers[0].acks == [100, 200, 250]


def test_build_with_id_prints_only_the_release(run: Any, rack: FakeRack) -> None:
    rack.builder.streams.append(_stream(rack, ["log line"], _done(rack, app="other")))
    rack.builds[B] = _done(rack, app="other")
    rack.metadata.create_app("other")
    result = run("build", "--id", "-a", "other")
    assert (result.code, result.out) == (0, "RNEWRELEASE\n")
    assert "Packaging source... OK\n" in result.err and "log line\n" in result.err
    assert rack.builder.started[0].app == "other"


def test_failed_build_exits_1_with_the_reason(run: Any, rack: FakeRack) -> None:
    failed = _done(rack, "failed", reason="service web: exit code 1")
    rack.builder.streams.append(_stream(rack, ["oops"], failed))
    rack.builds[B] = failed
    result = run("build")
    assert result.code == 1
    assert result.err.endswith(
        "Starting build... OK\nERROR: build failed: service web: exit code 1\n"
    )
    assert "Build:" not in result.out and "oops\n" in result.out


@pytest.mark.parametrize(
    "message",
    [
        "The command '/bin/sh -c exit 3' returned a non-zero code: 3",
        "validation errors:\n  service Web: bad name\n  service 9: bad name",
        "x" * 3000,  # its log line is cut at 2,000 characters, the reason at 500
    ],
)
def test_a_failed_build_says_its_error_once(run: Any, rack: FakeRack, message: str) -> None:
    """The lines the builder closes a failed build's log with are the failure the command
    reports itself."""
    closing = types.error_lines(message)
    failed = _done(rack, "failed", reason=types.one_line(message))
    rack.builder.streams.append(
        _stream(rack, ["Building: .", "#5 ERROR: exit 3", *closing], failed)
    )
    rack.builds[B] = failed
    result = run("build")
    assert result.code == 1
    assert result.out == "Building: .\n#5 ERROR: exit 3\n"  # the engine's step stays
    assert result.err.splitlines()[-1] == f"ERROR: build failed: {failed.reason}"
    assert result.err.count("ERROR") == 1
    # The stored log keeps them, and `builds logs` shows them: it reports no failure.
    rack.add(id="BFOLLOWED", app="myapp", status="running")
    rack.builder.streams.append(_stream(rack, closing, failed))
    assert run("builds", "logs", "BFOLLOWED").out == "".join(f"{line}\n" for line in closing)


def test_error_lines_that_are_not_the_failure_are_shown(run: Any, rack: FakeRack) -> None:
    lines = ["ERROR: a test said so", "going on", *[f"line {i}" for i in range(60)]]
    failed = _done(rack, "failed", reason="something else")
    rack.builder.streams.append(_stream(rack, [*lines, "ERROR: not quite"], failed))
    rack.builds[B] = failed
    assert run("build").out == "".join(f"{line}\n" for line in [*lines, "ERROR: not quite"])
    rack.builder.streams.append(_stream(rack, ["ERROR: flaky, retried", "done"], _done(rack)))
    rack.builds[B] = _done(rack)
    assert run("build").out.startswith("ERROR: flaky, retried\ndone\nBuild:")


def test_status_comes_from_the_record_not_the_stream(run: Any, rack: FakeRack) -> None:
    rack.builder.streams.append(_stream(rack, [], _done(rack)))
    rack.builds[B] = _done(rack, "cancelled")
    result = run("build")
    assert (result.code, result.err.splitlines()[-1]) == (1, "ERROR: build cancelled")


def test_build_reattaches_after_a_broken_stream(run: Any, rack: FakeRack) -> None:
    rack.builder.streams.append(
        [types.LogLine(0, "one"), Unavailable("builder service unreachable")]
    )
    rack.builder.streams.append([types.LogLine(0, "one"), types.LogLine(1, "two"), _done(rack)])
    rack.builds[B] = _done(rack)
    result = run("build")
    assert result.code == 0, result.err
    assert "one\ntwo\nBuild:" in result.out and result.out.count("one") == 1
    assert rack.builder.follows == [(B, 0), (B, 1)]
    assert "resuming" in result.err


def test_build_gives_up_after_repeated_failures(run: Any, rack: FakeRack) -> None:
    for _ in range(10):
        rack.builder.streams.append([Unavailable("builder service unreachable at x")])
    result = run("build")
    assert (result.code, result.err.splitlines()[-1]) == (
        1,
        "ERROR: builder service unreachable at x",
    )
    assert len(rack.builder.follows) == 6


def test_ctrl_c_while_following(run: Any, rack: FakeRack) -> None:
    rack.builder.streams.append([types.LogLine(0, "working"), KeyboardInterrupt()])
    result = run("build", "-r", "local")
    assert result.code == 130
    assert f"slipway builds logs {B} -a myapp -r local" in result.err
    assert f"slipway builds cancel {B} -a myapp -r local" in result.err
    assert rack.builder.followers[0].closed


def test_build_description_from_git(
    run: Any, rack: FakeRack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "client.cli.gitinfo.describe", lambda folder: ("a" * 40, "build aaaaaaaaaa fix header")
    )
    rack.builder.streams.append(_stream(rack, [], _done(rack)))
    rack.builds[B] = _done(rack)
    assert run("build").code == 0
    assert rack.builder.started[0].description == "build aaaaaaaaaa fix header"
    assert rack.builder.started[0].git_sha == "a" * 40
    assert run("build", "-d", "mine").code == 1  # no stream left: the point is the options
    assert rack.builder.started[1].description == "mine"


def test_build_arg_from_env(run: Any, rack: FakeRack) -> None:
    rack.builder.streams.append(_stream(rack, [], _done(rack)))
    rack.builds[B] = _done(rack)
    assert run("build", "--build-args", "SECRET", env={"SECRET": "s3 cr=t"}).code == 0
    assert rack.builder.started[0].build_args == {"SECRET": "s3 cr=t"}
    result = run("build", "--build-args", "SECRET")
    assert (result.code, result.err) == (
        1,
        "ERROR: build arg SECRET is not set in the environment\n",
    )
    assert rack.archive.uploads and len(rack.archive.uploads) == 1  # checked before uploading


def test_build_of_a_missing_folder(run: Any) -> None:
    result = run("build", "nope")
    assert (result.code, result.err) == (1, "ERROR: no such directory: nope\n")


@pytest.mark.parametrize(
    ("manifest", "error"),
    [
        (None, "ERROR: no such file: convox.yml"),
        (
            "services:\n  web:\n    build: .\n   image: x\n",
            "ERROR: invalid manifest: convox.yml line 4, column 4: "
            "expected <block end>, but found '<block mapping start>'",
        ),
        (
            "services:\n  Bad_Name:\n    build: .\n",
            "ERROR: validation errors:\nservice name Bad_Name invalid, "
            "must contain only lowercase alphanumeric and dashes",
        ),
        (
            "services:\n  web:\n    build: ../up\n",
            "ERROR: build path escapes the build folder: ../up",
        ),
    ],
    ids=["missing", "bad-yaml", "bad-name", "escapes"],
)
def test_the_manifest_is_checked_before_anything_is_packed(
    run: Any, rack: FakeRack, project: Path, manifest: str | None, error: str
) -> None:
    if manifest is None:
        (project / "convox.yml").unlink()
    else:
        (project / "convox.yml").write_text(manifest)
    for command in ("build", "deploy"):
        result = run(command)
        assert (result.code, result.out, result.err) == (1, "", error + "\n")
    assert rack.archive.uploads == [] and rack.builder.started == []


def test_the_manifest_check_leaves_variables_and_env_to_the_rack(
    run: Any, rack: FakeRack, project: Path
) -> None:
    (project / "convox.yml").write_text(
        "services:\n  web:\n    build: ${WEB_DIR}\n    environment: [REQUIRED]\n"
    )
    (project / "deploy").mkdir()
    (project / "deploy" / "other.yml").write_text("services:\n  web: {build: .}\n")
    rack.builder.streams.append(_stream(rack, [], _done(rack)))
    rack.builds[B] = _done(rack)
    assert run("build").code == 0
    missing = run("build", "-m", "deploy/missing.yml")
    assert (missing.code, missing.err) == (1, "ERROR: no such file: deploy/missing.yml\n")


def test_the_manifest_check_reads_variables_from_the_apps_release(
    run: Any, rack: FakeRack, project: Path
) -> None:
    # `${MIN}` empty would make `[, 3]`, which is no YAML: the rack fills it in, so must
    # the check, from the app's latest release.
    (project / "convox.yml").write_text(
        "services:\n  web:\n    build: .\n    scale:\n      count: [${MIN}, 3]\n"
    )
    rack.metadata.releases["myapp"] = [
        types.Release(id="RNEWEST", app="myapp", env={"MIN": "1"}),
        types.Release(id="ROLDER", app="myapp", env={}),
    ]
    rack.builder.streams.append(_stream(rack, [], _done(rack)))
    rack.builds[B] = _done(rack)
    assert run("build").code == 0
    rack.metadata.releases["myapp"] = []
    res = run("build")
    assert res.code == 1 and "convox.yml line 5" in res.err and not rack.builder.started[1:]


def test_build_dir_names_the_app(run: Any, rack: FakeRack, project: Path, tmp_path: Path) -> None:
    other = tmp_path / "second-app"
    other.mkdir()
    (other / "convox.yml").write_text("services:\n  web:\n    image: busybox\n")
    rack.builder.streams.append(_stream(rack, [], _done(rack, app="second-app")))
    rack.builds[B] = _done(rack, app="second-app")
    rack.metadata.create_app("second-app")
    assert run("build", str(other)).code == 0
    assert rack.builder.started[0].app == "second-app"


# --- builds --------------------------------------------------------------------------------


def test_builds_list(run: Any, rack: FakeRack) -> None:
    now = time.time()
    rack.add(
        id="BOLDERAAAAA",
        app="myapp",
        status="complete",
        release="ROLDAAAAAAA",
        created=now - 4000,
        started=now - 4000,
        ended=now - 3959,
        description="older",
    )
    rack.add(id="BNEWERAAAAA", app="myapp", status="running", created=now - 5, started=now - 5)
    result = run("builds")
    assert result.out.splitlines() == [
        "ID           STATUS    RELEASE      STARTED     ELAPSED  DESCRIPTION",
        "BNEWERAAAAA  running                now",
        "BOLDERAAAAA  complete  ROLDAAAAAAA  1 hour ago  41s      older",
    ]
    assert len(run("builds", "--limit", "1").out.splitlines()) == 2


def test_builds_info(run: Any, rack: FakeRack) -> None:
    rack.add(
        id="BINFOAAAAAA",
        app="myapp",
        status="failed",
        reason="boom",
        started=time.time() - 100,
        ended=time.time() - 90,
    )
    lines = run("builds", "info", "BINFOAAAAAA").out.splitlines()
    assert lines[0] == "Id           BINFOAAAAAA"
    assert lines[-1] == "Reason       boom"


def test_not_found_is_one_error_line(run: Any) -> None:
    result = run("builds", "info", "BXXX")
    assert (result.code, result.out, result.err) == (1, "", "ERROR: build not found: BXXX\n")


def test_wrong_app_is_not_found(run: Any, rack: FakeRack) -> None:
    rack.add(id="BTHEIRS", app="theirs", status="complete")
    assert run("builds", "info", "BTHEIRS").err == "ERROR: build not found: BTHEIRS\n"


def test_unexpected_errors_have_no_traceback(
    run: Any, rack: FakeRack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(rack.metadata, "list_builds", boom)
    result = run("builds")
    assert (result.code, result.err) == (1, "ERROR: RuntimeError: kaboom\n")
    debug = run("builds", env={"SLIPWAY_DEBUG": "1"})
    assert "Traceback" in debug.err and debug.err.endswith("ERROR: RuntimeError: kaboom\n")


def test_unauthorized(run: Any, rack: FakeRack, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> None:
        raise Unauthenticated()

    monkeypatch.setattr(rack.metadata, "list_builds", refuse)
    assert run("builds").err == "ERROR: unauthorized\n"


def test_builds_logs_of_a_finished_build(run: Any, rack: FakeRack) -> None:
    rack.add(id="BDONE", app="myapp", status="complete")
    rack.metadata.logs["BDONE"] = ["a\tb", "c"]
    result = run("builds", "logs", "BDONE")
    assert (result.code, result.out) == (0, "a\tb\nc\n")
    assert rack.builder.follows == []


def test_builds_logs_follows_a_running_build(run: Any, rack: FakeRack) -> None:
    rack.add(id=B, app="myapp", status="running")
    rack.builder.streams.append([types.LogLine(0, "x"), Unavailable("gone")])
    rack.builder.streams.append([types.LogLine(1, "y"), _done(rack)])
    result = run("builds", "logs", B)
    assert (result.code, result.out) == (0, "x\ny\n")
    assert rack.builder.follows == [(B, 0), (B, 1)]


def test_builds_logs_no_follow(run: Any, rack: FakeRack) -> None:
    rack.add(id=B, app="myapp", status="running")
    rack.metadata.logs[B] = ["so far"]
    assert run("builds", "logs", B, "--no-follow").out == "so far\n"
    assert rack.builder.follows == []


def test_builds_cancel(run: Any, rack: FakeRack) -> None:
    rack.add(id=B, app="myapp", status="running")
    cancelled = run("builds", "cancel", B)
    assert (cancelled.out, cancelled.err) == ("", "Cancelling build... OK\n")
    assert rack.builds[B].status == "cancelled"
    again = run("builds", "cancel", B)  # a no-op that relays the rack's reason
    assert (again.code, again.err) == (0, f"build {B} has ended (cancelled)\n")


# --- racks -------------------------------------------------------------------------------


def test_racks_and_rack(
    run: Any, rack: FakeRack, config_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert run("racks").out.splitlines() == [
        "NAME    HOST                CURRENT",
        "local   127.0.0.1:7400      *",
        "remote  remote.example:443",
    ]
    # A local rack: its registry and token file from its layout, without asking it.
    token = tmp_path / "data" / "slipway" / "racks" / "local" / "token"
    assert run("rack").out.splitlines() == [
        "Name      local",
        "Host      127.0.0.1:7400",
        "Registry  127.0.0.1:7404",
        f"Token     {token}",
    ]
    assert run.connected == []
    # A remote one is asked for its registry; its token is in the client configuration.
    rack.info = dataclasses.replace(rack.info, registry_host="registry.example:5000")
    assert json.loads(run("rack", "-r", "remote", "--json").out) == {
        "name": "remote",
        "host": "remote.example:443",
        "local": False,
        "registry": "registry.example:5000",
        "token_file": str(config_path),
    }
    shown = run("rack", "-r", "remote", env={"SLIPWAY_TOKEN": "t"}).out.splitlines()
    assert shown[2:] == ["Registry  registry.example:5000", "Token     $SLIPWAY_TOKEN"]


@pytest.mark.parametrize(
    ("rack", "hint"),
    [
        ("local", " (is the rack running? start it with: slipway rack start)"),
        ("remote", ""),  # not this machine's to start
    ],
)
def test_a_rack_that_does_not_answer(config_path: Path, rack: str, hint: str) -> None:
    def down(host: str, token: str, ca: bytes | None) -> Any:
        raise Unreachable("rack", host)

    err = io.StringIO()
    argv = ["builds", "-a", "x", "-r", rack]
    code = main(
        argv, stdout=io.StringIO(), stderr=err, env={}, connect=down, config_path=config_path
    )
    host = ClientConfig.load(config_path).racks[rack].host
    assert (code, err.getvalue()) == (1, f"ERROR: rack unreachable at {host}{hint}\n")


def test_switch(run: Any, config_path: Path) -> None:
    assert run("switch", "remote").err == "Switched to remote\n"
    assert json.loads(config_path.read_text())["current"] == "remote"
    result = run("switch", "nope")
    assert (result.code, result.err) == (1, "ERROR: rack not found: nope (see 'slipway racks')\n")


def test_login_checks_the_token_first(run: Any, config_path: Path) -> None:
    result = run("login", "build.example.com:8443", "--token", "sekrit")
    assert result.code == 0, result.err
    assert run.connected[-1] == ("build.example.com:8443", "sekrit")
    config = ClientConfig.load(config_path)
    assert config.current == "build.example.com"
    assert config.racks["build.example.com"].token == "sekrit"
    # A token may start with `-` (a rack's is URL-safe base64): it is still the value.
    assert run("login", "other.example.com:8443", "--token", "-9Ld-x").code == 0
    assert run.connected[-1] == ("other.example.com:8443", "-9Ld-x")


@pytest.mark.parametrize(
    ("token", "why"), [([], "no token given"), (["--token", "bad"], "the rack refused the token")]
)
def test_login_refused_says_what_token_wants(config_path: Path, token: list[str], why: str) -> None:
    out, err = io.StringIO(), io.StringIO()

    def refuse(host: str, token: str, ca: bytes | None) -> Any:
        raise Unauthenticated()

    code = main(
        ["login", "x.example:1", "--name", "x", *token],
        stdout=out,
        stderr=err,
        env={},
        connect=refuse,
        config_path=config_path,
    )
    assert (code, err.getvalue().splitlines()[-1]) == (
        1,
        f"ERROR: unauthorized: {why} (--token wants the contents of the file 'slipway rack' "
        "shows as Token on the rack's machine, by default "
        "~/.local/share/slipway/racks/local/token)",
    )
    assert "x" not in ClientConfig.load(config_path).racks


def test_rack_status_and_stop(run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import client.cli.localrack.rack as localrack

    calls: list[Any] = []
    monkeypatch.setattr(
        localrack,
        "rack_status",
        lambda name: (
            calls.append(name)
            or [
                ("builder-1", "running", "127.0.0.1:7400 pid 9 engine unix:///x building B1"),
                ("registry", "stopped", ""),
            ]
        ),
    )
    monkeypatch.setattr(localrack, "stop_rack", lambda name, console: calls.append(("stop", name)))
    monkeypatch.setattr(
        localrack,
        "add_builder",
        lambda name, engine, console: (
            calls.append(("add", name, engine))
            or localrack.BuilderSlot(2, "127.0.0.1:4242", engine or "")
        ),
    )
    assert run("rack", "status").out.splitlines() == [
        "PART       STATE    DETAIL",
        "builder-1  running  127.0.0.1:7400 pid 9 engine unix:///x building B1",
        "registry   stopped",
    ]
    run("rack", "stop", "--name", "other")
    out = run("rack", "add-builder", "--engine", "tcp://10.0.0.2:2375").out
    assert out.strip() == "Started builder-2 at 127.0.0.1:4242"
    assert calls == ["local", ("stop", "other"), ("add", "local", "tcp://10.0.0.2:2375")]


def test_rack_start(run: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import client.cli.localrack.rack as localrack

    calls: list[Any] = []
    monkeypatch.setattr(
        localrack,
        "start_rack",
        lambda name, port, data, console, engine_builder=None, **rest: calls.append(
            (name, port, data, engine_builder, *(rest[k] for k in sorted(rest)))
        ),
    )
    assert (
        run("rack", "start", "--name", "two", "--port", "7500", "--data", str(tmp_path)).code == 0
    )
    assert run("rack", "start").code == 0
    assert run("rack", "start", "--engine-builder", "legacy").code == 0
    scaled = (
        "rack start --builders 3 --database postgresql://me@db:5432/slipway "
        "--archives s3://bucket/src"
    )
    assert run(*scaled.split()).code == 0
    assert run(*"rack start --listen 10.0.0.5 --advertise rack.example".split()).code == 0
    ecr = "ecr://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert run("rack", "start", "--registry", ecr).code == 0
    # (name, port, data, engine builder, advertise, archives, builders, database, listen,
    # registry)
    n = None
    assert calls == [
        ("two", 7500, tmp_path, n, n, n, n, n, n, n),
        ("local", n, n, n, n, n, n, n, n, n),
        ("local", n, n, "legacy", n, n, n, n, n, n),
        ("local", n, n, n, n, "s3://bucket/src", 3, "postgresql://me@db:5432/slipway", n, n),
        ("local", n, n, n, "rack.example", n, n, n, "10.0.0.5", n),
        ("local", n, n, n, n, n, n, n, n, ecr),
    ]
    refused = run("rack", "start", "--engine-builder", "kaniko")
    assert refused.code != 0 and "invalid choice" in refused.err


def test_not_found_from_the_library_keeps_its_words() -> None:
    assert str(NotFound.of("build", "BXXX")) == "build not found: BXXX"
