"""convox.yml end to end (SPEC §4): build forms and defaults, `image:` pulls, environment
and interpolation, validation, other manifests, shared and parallel builds."""

from __future__ import annotations

import secrets
import subprocess
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


def test_invalid_service_names_are_validation_errors(rack: RackHandle, tmp_path: Path) -> None:
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

    assert res.code == 1
    assert "Traceback" not in res.err
    rule = "invalid name (must match ^[a-z][a-z0-9-]*$)"
    assert _failure(res.err) == (
        f"ERROR: build failed: validation errors: service Web: {rule}; service 9lives: {rule}"
    )
    # The command says it once, on stderr; the stored log keeps SPEC's layout: the
    # heading, then one line per violation.
    assert "validation errors" not in res.out
    build_id = rack.ok("builds", "-a", app).splitlines()[1].split()[0]
    assert rack.ok("builds", "logs", build_id, "-a", app).splitlines()[-3:] == [
        "ERROR: validation errors:",
        f"  service Web: {rule}",
        f"  service 9lives: {rule}",
    ]


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
    assert (res.code, _failure(res.err)) == (1, "ERROR: build failed: no such file: missing.yml")
    (src / "convox.yml").unlink()
    res = rack.slipway("build", str(src), "-a", app)
    assert (res.code, _failure(res.err)) == (1, "ERROR: build failed: no such file: convox.yml")
