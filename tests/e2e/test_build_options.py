"""`slipway build` options end to end (SPEC §3, §4): build arguments, `--development`,
`--no-cache`, the git description and sha, and the recorded entrypoint."""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest

from client.api.rack import Rack
from client.cli.config import ClientConfig
from tests.e2e.conftest import RackHandle
from tests.helpers import build_id_of, pull_back, write_files

pytestmark = pytest.mark.docker

# Every character a shell, a flag parser or a key=value list could trip on.
TRICKY = "a,b c 'single' \"double\" k=v $HOME ${X} `x` \\back\\slash\\ \\n\nsecond line\t!"


def _cat(image: str, path: str) -> bytes:
    """The exact bytes of `path` inside `image`."""
    proc = subprocess.run(
        ["docker", "run", "--rm", image, "cat", path], capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _library(rack: RackHandle) -> Rack:
    config = Path(rack.env["XDG_CONFIG_HOME"]) / "slipway" / "config.json"
    entry = ClientConfig.load(config).resolve(rack.name)
    return Rack.connect(entry.host, entry.token, entry.ca_pem)


def test_build_args_come_from_flags_then_app_env_intact(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"args-{marker}"
    names = ("FROM_FLAG", "FROM_ENV", "BOTH", "BARE", "TRICKY_FLAG", "TRICKY_ENV", "UNSET")
    dockerfile = "FROM busybox\n" + "".join(
        f"ARG {name}\nRUN printf '%s' \"${name}\" > /{name}\n" for name in names
    )
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": f"{dockerfile}RUN echo {marker}\n",
        },
    )
    rack.ok("apps", "create", app)
    library = _library(rack)
    library.metadata.create_release(
        app,
        env={
            "FROM_ENV": "env-value",
            "BOTH": "from-env",
            "TRICKY_ENV": TRICKY,
            "UNDECLARED_ENV": "x",
        },
    )

    bare = "from the client's environment, with = and ,"
    client = RackHandle(rack.name, rack.port, rack.data, dict(rack.env, BARE=bare))
    res = client.slipway(
        "build",
        str(src),
        "-a",
        app,
        "--build-args",
        "FROM_FLAG=flag-value",
        "--build-args",
        "BOTH=from-flag",
        "--build-args",
        "BARE",
        "--build-args",
        f"TRICKY_FLAG={TRICKY}",
        "--build-args",
        "UNDECLARED_FLAG=y",
    )
    assert res.code == 0, res.err

    web = pull_back(rack.registry, app, "web", build_id_of(res.out))
    values = {name: _cat(web, f"/{name}").decode() for name in names}
    assert values == {
        "FROM_FLAG": "flag-value",
        "FROM_ENV": "env-value",
        "BOTH": "from-flag",
        "BARE": bare,
        "TRICKY_FLAG": TRICKY,
        "TRICKY_ENV": TRICKY,
        "UNSET": "",
    }
    # A flag no Dockerfile declares is not passed; the build goes on and says so, in
    # Docker's words, in its log. The app environment's other variables are no build args.
    warning = "[Warning] One or more build-args [UNDECLARED_FLAG] were not consumed"
    assert warning in res.out.splitlines() and "UNDECLARED_ENV" not in res.out
    stored = rack.ok("builds", "logs", build_id_of(res.out), "-a", app).splitlines()
    assert stored.count(warning) == 1


def test_bare_build_arg_missing_from_the_client_environment(rack: RackHandle) -> None:
    env = {k: v for k, v in rack.env.items() if k != "NOT_SET_ANYWHERE"}
    client = RackHandle(rack.name, rack.port, rack.data, env)
    app = f"bare-{secrets.token_hex(4)}"
    client.ok("apps", "create", app)
    res = client.slipway("build", ".", "-a", app, "--build-args", "NOT_SET_ANYWHERE")
    assert (res.code, res.err.strip().splitlines()[-1]) == (
        1,
        "ERROR: build arg NOT_SET_ANYWHERE is not set in the environment",
    )


def test_development_builds_the_development_stage(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"dev-{marker}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": (
                "services:\n  web:\n    build: .\n"
                "  plain:\n    build:\n      manifest: Dockerfile.plain\n"
            ),
            "Dockerfile": (
                "FROM busybox AS base\nRUN echo base > /base\n"
                f"FROM base AS development\nRUN echo development-{marker} > /stage\n"
                f"FROM base AS production\nRUN echo production-{marker} > /stage\n"
            ),
            "Dockerfile.plain": f"FROM busybox\nRUN echo plain-{marker} > /stage\n",
        },
    )
    rack.ok("apps", "create", app)

    default = build_id_of(rack.ok("build", str(src), "-a", app))
    development = build_id_of(rack.ok("build", str(src), "-a", app, "--development"))

    def stage(service: str, build_id: str) -> bytes:
        return _cat(pull_back(rack.registry, app, service, build_id), "/stage")

    assert stage("web", default) == f"production-{marker}\n".encode()
    assert stage("web", development) == f"development-{marker}\n".encode()
    # A Dockerfile without a development stage builds as usual.
    assert stage("plain", development) == f"plain-{marker}\n".encode()


def test_no_cache_rebuilds_every_step(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"cache-{marker}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                f"FROM busybox\nRUN echo {marker} "
                "&& head -c 16 /dev/urandom | od -An -tx1 > /rand\n"
            ),
        },
    )
    rack.ok("apps", "create", app)

    def random_value(*flags: str) -> bytes:
        build_id = build_id_of(rack.ok("build", str(src), "-a", app, *flags))
        # The local tag, not a fresh pull: removing the built image would drop the very
        # layer cache this test is about.
        return _cat(f"{rack.registry}/{app}:web.{build_id}", "/rand")

    first = random_value()
    assert random_value() == first  # the RUN step came from the cache
    assert random_value("--no-cache") != first


def _git(folder: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _info(rack: RackHandle, app: str, build_id: str) -> dict[str, str]:
    lines = rack.ok("builds", "info", build_id, "-a", app).splitlines()
    pairs = (line.partition("  ") for line in lines)
    return {key: value.strip() for key, _, value in pairs}


def test_git_work_tree_gives_description_and_sha(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"git-{marker}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": f"FROM busybox\nRUN echo {marker}\n",
        },
    )
    _git(src, "init", "-q")
    _git(src, "add", "-A")
    _git(src, "commit", "-q", "-m", "Fix the header: a subject with spaces")
    sha = _git(src, "rev-parse", "HEAD")
    rack.ok("apps", "create", app)

    clean = build_id_of(rack.ok("build", str(src), "-a", app))
    info = _info(rack, app, clean)
    assert info["Description"] == f"build {sha[:10]} Fix the header: a subject with spaces"
    assert info["Git Sha"] == sha
    assert re.split(r"  +", rack.ok("builds", "-a", app).splitlines()[1])[-1] == (
        f"build {sha[:10]} Fix the header: a subject with spaces"
    )

    (src / "untracked.txt").write_text("dirty\n")
    dirty = build_id_of(rack.ok("build", str(src), "-a", app))
    info = _info(rack, app, dirty)
    assert info["Description"] == ""
    assert "Git Sha" not in info


def test_entrypoint_is_recorded_on_the_build(rack: RackHandle, tmp_path: Path) -> None:
    marker = secrets.token_hex(4)
    app = f"entry-{marker}"
    src = write_files(
        tmp_path / "app",
        {
            "convox.yml": "services:\n  web:\n    build: .\n",
            "Dockerfile": (
                f"FROM busybox\nRUN echo {marker}\n"
                'ENTRYPOINT ["/bin/sh", "-c", "echo \\"hello there\\"", "--"]\n'
            ),
        },
    )
    rack.ok("apps", "create", app)

    build_id = build_id_of(rack.ok("build", str(src), "-a", app))

    entrypoint = _library(rack).metadata.get_build(build_id, app).entrypoint
    assert entrypoint == shlex.join(["/bin/sh", "-c", 'echo "hello there"', "--"])
    assert shlex.split(entrypoint) == ["/bin/sh", "-c", 'echo "hello there"', "--"]
