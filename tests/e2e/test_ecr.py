"""A rack whose registry is ECR (`slipway rack start --registry ecr://…`), on one host of
its own: a network namespace whose /etc/hosts sends the ECR registry's name to a local
Docker Distribution registry standing in for it (TLS with a certificate for that name,
htpasswd with the password moto's token carries), moto in server mode as the ECR API, and
a Docker engine of the host's own. A build creates its repository through CreateRepository
and is pushed by the engine with the token's credentials to the endpoint the token names;
an import pushes its blobs after BatchCheckLayerAvailability; `rack registry` hands out the
token for `docker login`.

SQLite only (the host reaches no PostgreSQL): not part of the PostgreSQL pass."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.cli.localrack.registry import ENGINE_CERTS
from client.cli.localrack.tls import Authority
from tests.e2e.conftest import SLIPWAY
from tests.e2e.hosts import Engine, Host, make_hosts, start_engine
from tests.helpers import build_id_of, eventually, write_files

pytestmark = pytest.mark.docker

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
ECR_HOST = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
PASSWORD = f"{ACCOUNT}-auth-token"  # what moto's GetAuthorizationToken hands out
MOTO_PORT = 5000
PORT = 27500

AWS = """
import boto3, json, sys
ecr = boto3.client("ecr", region_name="us-east-1")
repos = ecr.describe_repositories()["repositories"]
print(json.dumps(sorted(r["repositoryName"] for r in repos)))
"""

REGISTRY = """
import base64, json, ssl, sys, urllib.request
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    request.add_header("Authorization", "Basic " + base64.b64encode(sys.argv[2].encode()).decode())
try:
    with urllib.request.urlopen(request, timeout=20) as resp:
        print(json.dumps([resp.status, json.loads(resp.read())]))
except urllib.error.HTTPError as err:
    print(json.dumps([err.code, None]))
"""


@dataclass
class EcrRack:
    host: Host
    engine: Engine
    data: Path
    env: dict[str, str]

    def slipway(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.host.run(
            [SLIPWAY, *args], env=self.env, capture_output=True, text=True, timeout=300
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.slipway(*args)
        assert done.returncode == 0, f"slipway {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr
        return done

    def python(self, code: str, *args: str) -> str:
        done = self.host.run(
            [sys.executable, "-c", code, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def _stand_in(folder: Path, host: Host) -> Path:
    """The config of a Distribution registry answering for ECR_HOST on port 443."""
    import bcrypt

    tls = Authority(folder / "tls", "ecr-stand-in").issue("registry", [ECR_HOST])
    htpasswd = folder / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"AWS:{hashed}\n")
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"auth:\n  htpasswd:\n    realm: ecr\n    path: {htpasswd}\n"
        f"http:\n  addr: {host.address}:443\n"
        f"  tls:\n    certificate: {tls.cert}\n    key: {tls.key}\n"
    )
    return config


@pytest.fixture
def ecr_rack(tmp_path: Path) -> Iterator[EcrRack]:
    moto = Path(sys.executable).parent / "moto_server"
    assert moto.exists(), "moto_server is missing: make setup installs moto[server]"
    trust = ENGINE_CERTS / ECR_HOST
    with make_hosts(count=1) as (host,):
        host.set_hosts_entries({ECR_HOST: host.address})
        config = _stand_in(tmp_path / "stand-in", host)
        ca = tmp_path / "stand-in" / "tls" / "ca.pem"
        # The engine trusts the stand-in as it would trust ECR's public certificate.
        trust.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca, trust / "ca.crt")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            with start_engine(host) as engine:
                logs = tmp_path / "logs"
                logs.mkdir()
                for name, argv in (
                    ("moto", [str(moto), "-H", "127.0.0.1", "-p", str(MOTO_PORT)]),
                    ("registry", ["docker-registry", "serve", str(config)]),
                ):
                    with open(logs / f"{name}.log", "wb") as log:
                        procs.append(host.popen(argv, stdout=log, stderr=log))
                env = {
                    k: v for k, v in os.environ.items() if not k.startswith(("SLIPWAY_", "AWS_"))
                }
                env.update(
                    XDG_CONFIG_HOME=str(tmp_path / "config"),
                    XDG_DATA_HOME=str(tmp_path / "data"),
                    DOCKER_HOST=engine.docker_host,
                    DOCKER_CONFIG=str(tmp_path / "docker"),
                    AWS_ENDPOINT_URL=f"http://127.0.0.1:{MOTO_PORT}",
                    AWS_ACCESS_KEY_ID="testing",
                    AWS_SECRET_ACCESS_KEY="testing",
                    AWS_DEFAULT_REGION=REGION,
                    # The registry service verifies the stand-in with its CA (ECR's
                    # certificate is publicly trusted; this one is not).
                    SSL_CERT_FILE=str(ca),
                )
                rack = EcrRack(host, engine, tmp_path / "rack", env)
                eventually(lambda: rack.python(AWS) == "[]\n", timeout=30)
                rack.ok(
                    "rack", "start", "--name", "onecr", "--port", str(PORT),
                    "--data", str(rack.data), "--registry", f"ecr://{ECR_HOST}",
                )  # fmt: skip
                try:
                    yield rack
                finally:
                    rack.slipway("rack", "stop", "--name", "onecr")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            shutil.rmtree(trust, ignore_errors=True)


def test_a_rack_on_ecr_builds_pushes_and_imports_through_the_tokens_endpoint(
    ecr_rack: EcrRack, tmp_path: Path
) -> None:
    rack = ecr_rack
    status = rack.ok("rack", "status", "--name", "onecr").stdout
    assert f"registry (ECR)  external  {ECR_HOST}" in status
    assert "distribution" not in status  # no registry of the rack's own

    app = f"ecr-{secrets.token_hex(3)}"
    src = write_files(
        tmp_path / "src",
        {
            "Dockerfile": f"FROM busybox\nRUN echo {app} > /marker\n",
            "convox.yml": "services:\n  web:\n    build: .\n",
        },
    )
    rack.ok("apps", "create", app)
    out = rack.ok("build", str(src), "-a", app).stdout
    build = build_id_of(out)
    reference = f"{ECR_HOST}/{app}:web.{build}"
    assert f"Running: docker push {reference}" in out

    # The repository was made through CreateRepository; the image is at the endpoint the
    # token named, behind the token's credentials.
    assert json.loads(rack.python(AWS)) == [app]
    tags_url = f"https://{ECR_HOST}/v2/{app}/tags/list"
    assert json.loads(rack.python(REGISTRY, tags_url))[0] == 401
    code, listed = json.loads(rack.python(REGISTRY, tags_url, f"AWS:{PASSWORD}"))
    assert code == 200 and listed["tags"] == [f"web.{build}"]

    # An import pushes its blobs itself (BatchCheckLayerAvailability first) to a new app.
    target = f"{app}-imported"
    rack.ok("apps", "create", target)
    pipe = f"{SLIPWAY} builds export {build} -a {app} | {SLIPWAY} builds import -a {target} --id"
    imported = rack.host.pipeline(pipe, rack.env)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(rack.python(AWS)) == sorted([app, target])
    new_id = rack.ok("builds", "-a", target).stdout.splitlines()[1].split()[0]
    code, listed = json.loads(
        rack.python(REGISTRY, f"https://{ECR_HOST}/v2/{target}/tags/list", f"AWS:{PASSWORD}")
    )
    assert code == 200 and listed["tags"] == [f"web.{new_id}"]

    # `rack registry` hands out the token's credentials; docker login takes them.
    shown = rack.ok("rack", "registry", "--name", "onecr").stdout.splitlines()
    assert shown == [f"Address   {ECR_HOST}", "Username  AWS"]
    password = rack.ok("rack", "registry", "--name", "onecr", "--password").stdout
    assert password.strip() == PASSWORD
    rack.engine.docker_ok("login", ECR_HOST, "-u", "AWS", "--password-stdin", input=password)
    imported_ref = f"{ECR_HOST}/{target}:web.{new_id}"
    rack.engine.docker_ok("pull", imported_ref)
    assert rack.engine.docker_ok("run", "--rm", imported_ref, "cat", "/marker").strip() == app
