"""convox.yml end to end (SPEC §4): build forms and defaults, `image:` pulls, environment
and interpolation, validation, other manifests, shared and parallel builds."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from client.api.rack import Rack
from client.cli.config import ClientConfig
from tests.e2e.conftest import RackHandle
from tests.helpers import build_id_of, pull_back, run_docker, step_output, write_files

pytestmark = pytest.mark.docker


def _library(rack: RackHandle) -> Rack:
    """The rack through the client library, as the CLI's configuration names it."""
    config = Path(rack.env["XDG_CONFIG_HOME"]) / "slipway" / "config.json"
    entry = ClientConfig.load(config).resolve(rack.name)
    return Rack.connect(entry.host, entry.token, entry.ca_pem)


def _failure(res_err: str) -> str:
    return res_err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def pulled_image(rack: RackHandle) -> str:
    """An image in the rack's registry for `image:` services, absent from the engine."""
    marker = secrets.token_hex(4)
    ref = f"{rack.registry}/base:{marker}"
    build = subprocess.run(
        ["docker", "build", "-t", ref, "-"],
        input=f"FROM busybox\nRUN echo pulled-{marker} > /which\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    run_docker("push", ref)
    run_docker("rmi", ref)
    return ref


def test_build_forms_defaults_image_and_shared_builds(
    rack: RackHandle, pulled_image: str, tmp_path: Path
) -> None:
    marker = secrets.token_hex(4)
    app = f"forms-{marker}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": (
                "resources:\n  db:\n    type: postgres\n"  # unknown keys are ignored
                "services:\n"
                "  web:\n    build: .\n    port: 3000\n"
                "  worker: {}\n"  # the defaults: path `.`, `Dockerfile`
                "  api:\n    build:\n      path: api\n      manifest: Dockerfile.api\n"
                "    scale:\n      count: 2\n"
                f"  cache:\n    build: no-such-folder\n    image: {pulled_image}\n"
            ),
            "Dockerfile": f"FROM busybox\nRUN echo root-{marker} > /which\n",
            "api/Dockerfile.api": (
                f"FROM busybox\nCOPY hello /hello\nRUN echo api-{marker} > /which\n"
            ),
            "api/hello": "from the api folder\n",
        },
    )
    rack.ok("apps", "create", app)

    out = rack.ok("build", str(src), "-a", app)

    lines = out.splitlines()
    build_id = build_id_of(out)
    # web and worker share (path, Dockerfile, args): one build, tagged and pushed for each.
    assert sorted(line for line in lines if line.startswith("Building: ")) == [
        "Building: .",
        "Building: api",
    ]
    assert f"Running: docker pull {pulled_image}" in lines
    for service in ("web", "worker", "api", "cache"):
        assert f"Running: docker push {rack.registry}/{app}:{service}.{build_id}" in lines

    images = {
        s: pull_back(rack.registry, app, s, build_id) for s in ("web", "worker", "api", "cache")
    }
    assert run_docker("run", "--rm", images["web"], "cat", "/which") == f"root-{marker}\n"
    assert run_docker("run", "--rm", images["api"], "cat", "/which", "/hello") == (
        f"api-{marker}\nfrom the api folder\n"
    )
    assert run_docker("run", "--rm", images["cache"], "cat", "/which").startswith("pulled-")
    image_id = "{{.Id}}"
    assert run_docker("inspect", "-f", image_id, images["web"]) == run_docker(
        "inspect", "-f", image_id, images["worker"]
    )


def test_independent_builds_run_in_parallel_up_to_the_limit(
    rack: RackHandle, tmp_path: Path
) -> None:
    """Three independent builds under the default limit of two: the first two overlap (each
    starts before the other ends), the third starts only after one has ended. Each step
    sleeps 4 s, far longer than starting a build takes, so the order is not a race."""
    marker = secrets.token_hex(4)
    app = f"parallel-{marker}"
    files = {"convox.yml": "services:\n"}
    for name in ("one", "two", "three"):
        files["convox.yml"] += f"  {name}:\n    build: {name}\n"
        files[f"{name}/Dockerfile"] = (
            f"FROM busybox\nRUN echo start-{name}-{marker} && sleep 4 && echo end-{name}-{marker}\n"
        )
    src = write_files(tmp_path / "app", files)
    rack.ok("apps", "create", app)

    lines = step_output(rack.ok("build", str(src), "-a", app).splitlines())

    def at(event: str, name: str) -> int:
        return lines.index(f"{event}-{name}-{marker}")

    order = sorted(("one", "two", "three"), key=lambda name: at("start", name))
    first, second, third = order
    assert at("start", second) < at("end", first), lines  # the first two overlap
    assert at("start", third) > min(at("end", first), at("end", second)), lines  # bounded


def test_environment_required_then_interpolated(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"envs-{marker}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": (
                "environment:\n  - ZED_KEY\n  - WITH_DEFAULT=fallback\n  - '*'\n"
                "services:\n"
                "  web:\n    build: ${WEB_DIR}\n"
                "    environment:\n      - ALPHA_KEY\n      - ZED_KEY\n"
            ),
            "chosen/Dockerfile": f"FROM busybox\nRUN echo chosen-{marker} > /which\n",
        },
    )
    rack.ok("apps", "create", app)

    res = rack.slipway("build", str(src), "-a", app)
    assert res.code == 1
    assert "Traceback" not in res.err
    assert _failure(res.err) == "ERROR: build failed: required env: ALPHA_KEY, ZED_KEY"

    library = _library(rack)
    library.metadata.create_release(
        app, env={"ALPHA_KEY": "a", "ZED_KEY": "", "WEB_DIR": "chosen"}, description="env"
    )
    out = rack.ok("build", str(src), "-a", app)

    assert "Building: chosen" in out.splitlines()
    web = pull_back(rack.registry, app, "web", build_id_of(out))
    assert run_docker("run", "--rm", web, "cat", "/which") == f"chosen-{marker}\n"


def test_invalid_service_names_are_refused_before_packing(rack: RackHandle, tmp_path: Path) -> None:
    app = f"names-{secrets.token_hex(3)}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  Web:\n    build: .\n  9lives:\n    build: .\n  ok: {}\n",
            "Dockerfile": "FROM busybox\n",
        },
    )
    rack.ok("apps", "create", app)

    res = rack.slipway("build", str(src), "-a", app)

    # The client reads the manifest as the builder does, before anything is packed.
    rule = "invalid, must contain only lowercase alphanumeric and dashes"
    assert (res.code, res.out) == (1, "")
    assert res.err == (
        f"ERROR: validation errors:\nservice name Web {rule}\nservice name 9lives {rule}\n"
    )
    assert json.loads(rack.ok("builds", "-a", app, "--json")) == []  # no build was started
    (src / "convox.yml").write_text("services:\n  web:\n    build: .\n   image: x\n")
    res = rack.slipway("build", str(src), "-a", app)
    assert (res.code, res.out, res.err) == (
        1,
        "",
        "ERROR: invalid manifest: convox.yml line 4, column 4: "
        "expected <block end>, but found '<block mapping start>'\n",
    )


def test_other_manifest_with_m_and_missing_manifests(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"manifests-{marker}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "deploy/other.yml": "services:\n  other:\n    build: alt\n",  # paths from the root
            "Dockerfile": "FROM busybox\nRUN echo from-convox-yml > /which\n",
            "alt/Dockerfile": f"FROM busybox\nRUN echo alt-{marker} > /which\n",
        },
    )
    rack.ok("apps", "create", app)

    out = rack.ok("build", str(src), "-a", app, "-m", "deploy/other.yml")

    lines = out.splitlines()
    build_id = build_id_of(out)
    assert [line for line in lines if line.startswith("Building: ")] == ["Building: alt"]
    assert not any(f":web.{build_id}" in line for line in lines)
    other = pull_back(rack.registry, app, "other", build_id)
    assert run_docker("run", "--rm", other, "cat", "/which") == f"alt-{marker}\n"

    res = rack.slipway("build", str(src), "-a", app, "-m", "missing.yml")
    assert (res.code, res.out, res.err) == (1, "", "ERROR: no such file: missing.yml\n")
    (src / "convox.yml").unlink()
    res = rack.slipway("build", str(src), "-a", app)
    assert (res.code, res.out, res.err) == (1, "", "ERROR: no such file: convox.yml\n")


@pytest.fixture
def local_image() -> Iterator[str]:
    """An image only this machine's engine has (no registry serves it): the builder's pull
    fails and it uses the local copy, as it does for `busybox`."""
    marker = secrets.token_hex(4)
    ref = f"slipway-e2e-local-{marker}:v1"
    build = subprocess.run(
        ["docker", "build", "-t", ref, "-"],
        input=f"FROM busybox\nRUN echo local-{marker} > /which\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    yield ref
    subprocess.run(["docker", "rmi", ref], capture_output=True, timeout=60)


def test_a_convox_manifest_with_every_rule_builds_what_convox_builds(
    rack: RackHandle, pulled_image: str, local_image: str, tmp_path: Path
) -> None:
    """Merge keys plain and quoted (one mapping, a list of them, explicit keys overriding),
    anchors and aliases, `${VAR}` (set and missing), top-level environment, `build` as a
    string and as a map, `image` over `build`, a service with no keys, and the sections
    and keys a build ignores: each service gets the image Convox would give it."""
    marker = secrets.token_hex(4)
    app = f"convox-{marker}"
    manifest = f"""\
balancers:
  main:
    service: api
    ports:
      3000: 1000
environment:
  - GLOBAL=1
  - TOP_REQUIRED
params:
  Foo: bar
resources:
  database:
    type: postgres
    options:
      size: db.t2.large
x-local: &local
  image: {local_image}
x-api-build: &api-build
  path: api
  manifest: Dockerfile.${{FLAVOUR}}
services:
  proxy: &proxy
    image: {pulled_image}
    command: bash
    domain: ["bar.example.org", "*.example.org"]
    port: https:2000
    scale: {{cpu: 512, memory: 1024}}
  inherit:
    "<<": *proxy
    command: inherit
  plain:
    <<: *proxy
    health: /auth
  first:
    '<<': [*local, *proxy]
  own:
    "<<": *proxy
    image: ${{NOT_SET}}
  api:
    build: *api-build
    environment:
      - SECRET
    scale: 3-10
  worker:
    build: api
    agent: true
  web:
    build: .
    image: {local_image}
  bar:
timers:
  alpha:
    command: bin/alpha
    service: api
    schedule: "*/1 * * * ?"
"""
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": manifest,
            "Dockerfile": f"FROM busybox\nRUN echo root-{marker} > /which\n",
            "api/Dockerfile.api": f"FROM busybox\nRUN echo api-{marker} > /which\n",
            "api/Dockerfile": f"FROM busybox\nRUN echo worker-{marker} > /which\n",
        },
    )
    rack.ok("apps", "create", app)

    # The top-level environment is every service's: its required key is required.
    res = rack.slipway("build", str(src), "-a", app)
    assert (res.code, _failure(res.err)) == (
        1,
        "ERROR: build failed: required env: SECRET, TOP_REQUIRED",
    )
    rack.ok("env", "set", "FLAVOUR=api", "TOP_REQUIRED=yes", "SECRET=s", "-a", app)
    out = rack.ok("build", str(src), "-a", app)

    lines = out.splitlines()
    build_id = build_id_of(out)
    assert sorted(
        line for line in lines if line.startswith(("Building: ", "Running: docker pull"))
    ) == sorted(
        [
            "Building: .",  # own and bar: one build
            "Building: api",  # api (Dockerfile.api, from ${FLAVOUR})
            "Building: api",  # worker (api/Dockerfile)
            f"Running: docker pull {local_image}",  # first and web: one pull
            f"Running: docker pull {pulled_image}",  # proxy, inherit and plain: one pull
        ]
    )
    local = run_docker("run", "--rm", local_image, "cat", "/which").strip()
    expected = {
        "proxy": "pulled-",
        "inherit": "pulled-",  # the quoted "<<" merges: pulled, not built
        "plain": "pulled-",
        "first": local,  # in a list of aliases the earlier wins
        "own": f"root-{marker}",  # the explicit (empty: unset variable) image wins: built
        "api": f"api-{marker}",
        "worker": f"worker-{marker}",
        "web": local,  # image wins over build
        "bar": f"root-{marker}",  # no keys at all: `.` and `Dockerfile`
    }
    images = {s: pull_back(rack.registry, app, s, build_id) for s in expected}
    got = {s: run_docker("run", "--rm", ref, "cat", "/which").strip() for s, ref in images.items()}
    assert {s: got[s] if expected[s] != "pulled-" else got[s][:7] for s in got} == expected
    image_id = "{{.Id}}"
    ids = {s: run_docker("inspect", "-f", image_id, ref).strip() for s, ref in images.items()}
    assert ids["inherit"] == ids["plain"] == ids["proxy"]
    assert ids["own"] == ids["bar"] and ids["first"] == ids["web"]
