"""Two local racks side by side in one client config: builds move between them through
`builds export | builds import`, and through `builds copy`, where the destination rack
fetches the build from the source rack itself and moves only the layers it lacks."""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.filesize import decimal

from tests.e2e.conftest import RackHandle, missing_app
from tests.e2e.test_transfer import build_app, pipe, registry_tags, run_from_registry

pytestmark = pytest.mark.docker

COPIED = re.compile(
    r"^Copying build\.\.\. OK, (R[A-Z]{10})\nmoved (\d+) of (\d+) blobs \((.+)\)\n$"
)
BIG = 3_000_000


@dataclass(frozen=True)
class Built:
    app: str
    id: str
    marker: str


def dockerfile(token: str, marker: str) -> str:
    """A big layer the engine's cache gives every build of the same `token`, then a small
    layer of the build's own."""
    return (
        "FROM busybox\n"
        f"RUN head -c {BIG} /dev/urandom > /big && echo {token} > /token\n"
        f"RUN echo {marker} > /marker\n"
        'ENTRYPOINT ["cat", "/marker"]\n'
    )


@pytest.fixture(scope="module")
def token() -> str:
    return secrets.token_hex(6)


@pytest.fixture(scope="module")
def first(rack: RackHandle, token: str, tmp_path_factory: pytest.TempPathFactory) -> Built:
    app = f"racks-{token}"
    marker = f"first-{token}"
    rack.ok("apps", "create", app)
    build_id = build_app(
        rack, tmp_path_factory.mktemp("first") / app, app, dockerfile(token, marker)
    )
    return Built(app, build_id, marker)


def newest_build(rack: RackHandle, app: str) -> list[str]:
    """The cells of the app's newest build in `slipway builds`."""
    return rack.ok("builds", "-a", app).splitlines()[1].split()


def blobs_of(rack: RackHandle, app: str, tag: str) -> dict[str, int]:
    """The blobs (config and layers) of `app:tag` in the rack's registry, with sizes."""
    request = rack.registry_request(
        f"{app}/manifests/{tag}", Accept="application/vnd.docker.distribution.manifest.v2+json"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        data = json.loads(resp.read())
    return {ref["digest"]: ref["size"] for ref in [data["config"], *data["layers"]]}


def test_export_from_one_rack_piped_into_import_on_the_other(
    rack: RackHandle, rack2: RackHandle, first: Built
) -> None:
    target = f"piped-{secrets.token_hex(3)}"
    rack.ok("apps", "create", target, "-r", rack2.name)

    done = pipe(
        rack,
        f'"$SLIPWAY" builds export {first.id} -a {first.app} -r {rack.name} '
        f'| "$SLIPWAY" builds import -a {target} -r {rack2.name} --id',
    )

    assert done.returncode == 0, done.stderr
    release = done.stdout.strip()
    assert re.fullmatch(r"R[A-Z]{10}", release), done.stdout
    cells = newest_build(rack2, target)
    assert cells[1:3] == ["complete", release]
    assert registry_tags(rack, target) == []  # rack1 is untouched
    assert run_from_registry(rack2, target, f"web.{cells[0]}") == first.marker


def test_copy_moves_only_the_layers_the_destination_lacks(
    rack: RackHandle, rack2: RackHandle, first: Built, token: str, tmp_path: Path
) -> None:
    target = f"copied-{secrets.token_hex(3)}"
    copy = ("builds", "copy", first.id, "-a", first.app, "--to", rack2.name, "--to-app", target)

    # Into an app the destination does not have: refused before anything moves, and
    # nothing is created there.
    refused = rack.slipway(*copy)
    assert (refused.code, refused.out, refused.err) == (1, "", missing_app(target) + "\n")
    assert target not in rack2.apps()
    assert registry_tags(rack2, target) == []

    rack2.ok("apps", "create", target)
    done = rack.slipway(*copy)

    assert done.code == 0 and done.out == "", done
    copied = COPIED.match(done.err)
    assert copied, done.err
    blobs = blobs_of(rack, first.app, f"web.{first.id}")
    # Nothing was on rack2: busybox, the big layer, the marker layer and the config moved.
    assert copied.group(2, 3) == ("4", "4")
    assert copied.group(4) == decimal(sum(blobs.values()))
    cells = newest_build(rack2, target)
    assert cells[1:3] == ["complete", copied.group(1)]
    assert rack2.ok("builds", "-a", target).splitlines()[1].endswith("  to be moved")
    original_log = rack.ok("builds", "logs", first.id, "-a", first.app)
    assert rack2.ok("builds", "logs", cells[0], "-a", target) == original_log
    assert run_from_registry(rack2, target, f"web.{cells[0]}", BIG) == first.marker

    # A second build shares busybox and the big layer (from the engine's cache).
    marker = f"second-{token}"
    second = build_app(rack, tmp_path / first.app, first.app, dockerfile(token, marker))
    new = {
        digest: size
        for digest, size in blobs_of(rack, first.app, f"web.{second}").items()
        if digest not in blobs
    }
    assert len(new) == 2, new  # the marker layer and the config

    again = rack.slipway(
        "builds", "copy", second, "-a", first.app, "--to", rack2.name, "--to-app", target, "--id"
    )

    assert again.code == 0, again
    release = again.out.strip()
    assert (
        again.err
        == f"Copying build... OK, {release}\nmoved 2 of 4 blobs ({decimal(sum(new.values()))})\n"
    )
    cells = newest_build(rack2, target)
    assert cells[2] == release
    assert run_from_registry(rack2, target, f"web.{cells[0]}") == marker


def test_copy_errors_leave_nothing_behind(
    rack: RackHandle, rack2: RackHandle, first: Built
) -> None:
    target = f"never-{secrets.token_hex(3)}"
    # The destination app exists: the copies below fail for their own reasons.
    rack2.ok("apps", "create", target)
    copy = ("builds", "copy", first.id, "-a", first.app, "--to", rack2.name, "--to-app", target)

    wrong = RackHandle(rack.name, rack.port, rack.data, dict(rack.env, SLIPWAY_TOKEN="nope"))
    refused = wrong.slipway(*copy)
    assert refused.code == 1
    assert refused.err.splitlines()[-1] == f"ERROR: source rack {rack.name} refused the token"

    missing = rack.slipway(
        "builds", "copy", "BNOSUCHBUIL", "-a", first.app, "--to", rack2.name, "--to-app", target
    )
    assert missing.code == 1
    assert missing.err.splitlines()[-1] == "ERROR: build not found: BNOSUCHBUIL"

    nowhere = rack.slipway("builds", "copy", first.id, "-a", first.app, "--to", "nosuchrack")
    assert (nowhere.code, nowhere.err) == (
        1,
        "ERROR: rack not found: nosuchrack (see 'slipway racks')\n",
    )

    for res in (refused, missing, nowhere):
        assert "Traceback" not in res.err
    assert rack2.ok("builds", "-a", target).splitlines()[1:] == []  # no build recorded
    assert rack2.ok("releases", "-a", target).splitlines()[1:] == []
    assert registry_tags(rack2, target) == []
