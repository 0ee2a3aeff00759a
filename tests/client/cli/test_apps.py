"""`slipway apps` and friends through the `slipway` command, against a fake rack: list,
create, info, delete, `--json`, and nothing creating an app implicitly."""

from __future__ import annotations

import json
from typing import Any

from client.kernel import types
from tests.client.cli.fakes import FakeRack

HINT = "ERROR: app not found: {0} (create it with: slipway apps create {0})\n"


def test_apps_lists_name_status_and_release(run: Any, rack: FakeRack) -> None:
    rack.metadata.apps["web-shop"] = types.App(
        "web-shop", created=1_700_000_000.0, release="RAAAAAAAAAA"
    )
    result = run("apps")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "NAME      STATUS   RELEASE",
        "myapp     new",
        "web-shop  running  RAAAAAAAAAA",
    ]


def test_apps_json_is_one_list_of_objects(run: Any, rack: FakeRack) -> None:
    rack.metadata.apps["web-shop"] = types.App(
        "web-shop", created=1_700_000_000.0, release="RAAAAAAAAAA"
    )
    result = run("apps", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out) == [
        {"name": "myapp", "status": "new", "release": "", "created": None},
        {
            "name": "web-shop",
            "status": "running",
            "release": "RAAAAAAAAAA",
            "created": "2023-11-14T22:13:20Z",
        },
    ]


def test_apps_create_then_again_says_it_exists(run: Any, rack: FakeRack) -> None:
    created = run("apps", "create", "fresh")
    # A status line: on stderr when stdout is not a terminal (SPEC §3).
    assert (created.code, created.out, created.err) == (0, "", "Creating fresh... OK\n")
    assert "fresh" in rack.metadata.apps
    again = run("apps", "create", "fresh")
    assert (again.code, again.err) == (1, "ERROR: app already exists: fresh\n")
    bad = run("apps", "create", "Not_Valid")
    assert bad.code == 1 and bad.err.startswith("ERROR: invalid app name")


def test_apps_info_and_its_json(run: Any, rack: FakeRack) -> None:
    rack.metadata.apps["shop"] = types.App("shop", created=1_700_000_000.0, release="RAAAAAAAAAA")
    info = run("apps", "info", "shop")
    assert info.code == 0, info.err
    lines = info.out.splitlines()
    assert lines[:3] == ["Name     shop", "Status   running", "Release  RAAAAAAAAAA"]
    assert lines[3].startswith("Created  ")
    shown = json.loads(run("apps", "info", "shop", "--json").out)
    assert shown == {
        "name": "shop",
        "status": "running",
        "release": "RAAAAAAAAAA",
        "created": "2023-11-14T22:13:20Z",
    }
    # Showing or deleting an unknown app is plain NOT_FOUND (SPEC §8); the hint is for
    # putting something into one.
    assert run("apps", "info", "ghost").err == "ERROR: app not found: ghost\n"


def test_apps_delete_refuses_while_building_then_deletes(run: Any, rack: FakeRack) -> None:
    rack.add(id="BRUNNINGAAA", app="myapp", status="running")
    busy = run("apps", "delete", "myapp")
    assert busy.code == 1 and "cancel it first" in busy.err
    assert "myapp" in rack.metadata.apps
    rack.builds["BRUNNINGAAA"] = types.Build(id="BRUNNINGAAA", app="myapp", status="cancelled")
    gone = run("apps", "delete", "myapp")
    assert (gone.code, gone.out, gone.err) == (0, "", "Deleting myapp... OK\n")
    assert "myapp" not in rack.metadata.apps
    assert run("apps", "delete", "myapp").err == "ERROR: app not found: myapp\n"


def test_build_into_an_unknown_app_fails_at_once_and_sends_nothing(
    run: Any, rack: FakeRack
) -> None:
    result = run("build", "-a", "helo")
    assert (result.code, result.err) == (1, HINT.format("helo"))
    assert "Packaging" not in result.out  # refused before anything was packed
    assert rack.archive.uploads == [] and rack.archive.blobs == {}
    assert rack.builder.started == [] and "helo" not in rack.metadata.apps


def test_import_into_an_unknown_app_fails_before_reading(
    run: Any, rack: FakeRack, tmp_path: Any
) -> None:
    archive = tmp_path / "build.tgz"
    archive.write_bytes(b"not read")
    result = run("builds", "import", "-a", "helo", "-f", str(archive))
    assert (result.code, result.err) == (1, HINT.format("helo"))


def test_builds_and_builds_info_json(run: Any, rack: FakeRack) -> None:
    manifest = "services:\n  web:\n    build: .\n  worker:\n    image: busybox\n"
    rack.add(
        id="BCOMPLETEAA",
        app="myapp",
        status="complete",
        release="RAAAAAAAAAA",
        description="first",
        manifest=manifest,
        entrypoint="cat /x",
        git_sha="a" * 40,
        created=1_700_000_000.0,
        started=1_700_000_001.0,
        ended=1_700_000_042.5,
        builder="builder-2",
    )
    rack.add(id="BRUNNINGAAA", app="myapp", status="running", created=1_700_000_100.0)
    listed = json.loads(run("builds", "--json").out)
    assert [b["id"] for b in listed] == ["BRUNNINGAAA", "BCOMPLETEAA"]
    running, complete = listed
    assert running["elapsed_seconds"] is None and running["ended"] is None
    assert running["started"] is None and running["images"] == {}
    assert complete == {
        "id": "BCOMPLETEAA",
        "app": "myapp",
        "status": "complete",
        "release": "RAAAAAAAAAA",
        "description": "first",
        "created": "2023-11-14T22:13:20Z",
        "started": "2023-11-14T22:13:21Z",
        "ended": "2023-11-14T22:14:02Z",
        "elapsed_seconds": 41.5,
        "reason": "",
        "git_sha": "a" * 40,
        "manifest": manifest,
        "entrypoint": "cat /x",
        "builder": "builder-2",
        "images": {
            "web": "registry.local/myapp:web.BCOMPLETEAA",
            "worker": "registry.local/myapp:worker.BCOMPLETEAA",
        },
    }
    assert json.loads(run("builds", "info", "BCOMPLETEAA", "--json").out) == complete
    # The table form shows the builder and lists the images too; a build no builder took
    # yet has no Builder line.
    info = run("builds", "info", "BCOMPLETEAA").out.splitlines()
    assert "Builder      builder-2" in info
    assert not any(
        line.startswith("Builder") for line in run("builds", "info", "BRUNNINGAAA").out.splitlines()
    )
    assert info[-3:] == [
        "Images",
        "  web     registry.local/myapp:web.BCOMPLETEAA",
        "  worker  registry.local/myapp:worker.BCOMPLETEAA",
    ]


def test_racks_rack_and_json_before_or_after_the_subcommand(run: Any) -> None:
    racks = json.loads(run("racks", "--json").out)
    assert racks == [
        {"name": "local", "host": "127.0.0.1:7400", "current": True, "local": True},
        {"name": "remote", "host": "remote.example:443", "current": False, "local": False},
    ]
    shown = json.loads(run("rack", "--json").out)
    assert shown == {
        "name": "local",
        "host": "127.0.0.1:7400",
        "local": True,
        "registry": "127.0.0.1:7404",
        "token_file": shown["token_file"],  # in the data folder (test_cli: test_racks_and_rack)
    }
    # `--json` counts wherever it is given.
    assert json.loads(run("apps", "--json", "info", "myapp").out)["name"] == "myapp"
    assert json.loads(run("apps", "info", "myapp", "--json").out)["name"] == "myapp"
