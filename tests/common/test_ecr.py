"""ECR as the rack registry against moto in server mode (a real HTTP ECR API, the one the
`s3` fixture starts: moto serves every AWS service on one port) and, for the data plane, a
real Distribution registry whose htpasswd holds the password moto's token carries."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import boto3
import pytest
from botocore.stub import Stubber

from client.kernel.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from services.common.config import RegistryCredentials
from services.common.ecr import EcrRegistry, EcrUrl, parse_ecr_url
from services.common.oci import DistributionRegistry, Registry
from tests.common.test_oci import digest_of, push_image
from tests.conftest import S3Endpoint
from tests.helpers import eventually, free_port

ACCOUNT = "123456789012"  # moto's account
HOST = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"
URL = EcrUrl(ACCOUNT, "us-east-1", HOST)
# moto's tokens expire on 2015-01-01: a clock the day before sees them valid.
EXPIRES = datetime(2015, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def aws(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """The moto server, its endpoint and dummy credentials in boto3's environment."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_ECR", raising=False)
    return s3


def ecr_client() -> Any:
    return boto3.client("ecr", region_name="us-east-1")


def counting(client: Any, operation: str) -> list[str]:
    """Records each call of `operation` that reached the ECR endpoint."""
    calls: list[str] = []
    client.meta.events.register(
        f"after-call.ecr.{operation}", lambda **kwargs: calls.append(operation)
    )
    return calls


def repo() -> str:
    return f"ecr-{secrets.token_hex(4)}"


def moto_password() -> str:
    data = ecr_client().get_authorization_token(registryIds=[ACCOUNT])["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    assert user == "AWS" and password
    return password


# The registry URL.


def test_an_ecr_url_names_account_region_and_host() -> None:
    assert parse_ecr_url(f"ecr://{HOST}") == URL
    assert parse_ecr_url("ecr://000000000001.DKR.ECR.AP-SOUTHEAST-2.amazonaws.com") == EcrUrl(
        "000000000001", "ap-southeast-2", "000000000001.dkr.ecr.ap-southeast-2.amazonaws.com"
    )
    assert parse_ecr_url("ecr://000000000001.dkr.ecr.us-gov-west-1.amazonaws.com").region == (
        "us-gov-west-1"
    )


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"https://{HOST}", "the scheme must be ecr://"),
        (HOST, "the scheme must be ecr://"),
        (f"ecr://{HOST}/app", "no path may follow the host"),
        (f"ecr://{HOST}/", "no path may follow the host"),
        (f"ecr://{HOST}:443", "no port or user may be given"),
        (f"ecr://user@{HOST}", "no port or user may be given"),
        ("ecr://12345678901.dkr.ecr.us-east-1.amazonaws.com", "the account must be 12 digits"),
        ("ecr://12345678901a.dkr.ecr.us-east-1.amazonaws.com", "the account must be 12 digits"),
        (f"ecr://{ACCOUNT}.dkr.ecr.useast1.amazonaws.com", "the region must be an AWS region"),
        (f"ecr://{ACCOUNT}.dkr.ecr.amazonaws.com", "the host must be"),
        (f"ecr://{HOST}.example.com", "the host must be"),
        ("ecr://[::1", "not a URL"),
        ("", "the scheme must be ecr://"),
    ],
)
def test_other_urls_are_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match="^invalid ECR registry ") as caught:
        parse_ecr_url(url)
    assert why in str(caught.value)
    assert "expected ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com" in str(caught.value)


def test_a_long_url_is_not_echoed_whole() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_ecr_url("ecr://" + "x" * 5000)
    assert len(str(caught.value)) < 250 and "x" * 101 not in str(caught.value)


# The control plane.


def test_prepare_creates_the_repository_once(aws: S3Endpoint) -> None:
    client = ecr_client()
    creates = counting(client, "CreateRepository")
    registry = EcrRegistry(URL, client)
    name = repo()

    registry.prepare(name)
    registry.prepare(name)

    assert creates == ["CreateRepository"]
    found = client.describe_repositories(registryId=ACCOUNT, repositoryNames=[name])
    assert [r["repositoryName"] for r in found["repositories"]] == [name]
    # Another process (a new EcrRegistry) finds it there already: that is fine.
    EcrRegistry(URL, client).prepare(name)
    assert creates == ["CreateRepository"] * 2


def test_the_default_client_follows_aws_endpoint_url(aws: S3Endpoint) -> None:
    registry = EcrRegistry.from_url(f"ecr://{HOST}")
    name = repo()
    registry.prepare(name)
    found = ecr_client().describe_repositories(registryId=ACCOUNT, repositoryNames=[name])
    assert found["repositories"][0]["repositoryName"] == name


def test_auth_gives_the_engine_the_tokens_password(
    aws: S3Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="services.common.ecr")
    registry = EcrRegistry(URL, ecr_client(), clock=Clock(EXPIRES - timedelta(hours=12)))
    assert registry.auth() == {
        "username": "AWS",
        "password": moto_password(),
        "serveraddress": HOST,
    }
    assert moto_password() not in repr(registry._token)
    assert "token for" in caplog.text and moto_password() not in caplog.text


def test_the_token_is_cached_while_valid_and_fetched_again_near_expiry(aws: S3Endpoint) -> None:
    client = ecr_client()
    fetches = counting(client, "GetAuthorizationToken")
    clock = Clock(EXPIRES - timedelta(hours=12))
    planes: list[str] = []

    def plane(host: str, credentials: RegistryCredentials) -> Registry:
        planes.append(host)
        return DistributionRegistry(host, credentials)

    registry = EcrRegistry(URL, client, clock=clock, data_plane=plane)
    registry.auth()
    registry.auth()
    clock.now = EXPIRES - timedelta(minutes=16)
    registry.auth()
    assert len(fetches) == 1 and planes == [HOST]

    clock.now = EXPIRES - timedelta(minutes=14)  # within the 15-minute margin
    registry.auth()
    assert len(fetches) == 2 and planes == [HOST, HOST]  # the data plane is rebuilt with it
    registry.auth()  # still near expiry: every call fetches
    clock.now = EXPIRES + timedelta(days=1)
    registry.auth()
    assert len(fetches) == 4


def test_the_default_data_plane_is_https_to_the_tokens_endpoint(aws: S3Endpoint) -> None:
    registry = EcrRegistry(URL, ecr_client())
    plane = registry._current()[1]
    assert isinstance(plane, DistributionRegistry)
    assert plane.host == HOST and plane._url("app/tags/list").startswith(f"https://{HOST}/")


def upload_layer(client: Any, repository: str, data: bytes) -> str:
    """A layer pushed through the ECR API (as `docker push` does not, but moto keeps it)."""
    upload = client.initiate_layer_upload(registryId=ACCOUNT, repositoryName=repository)
    client.upload_layer_part(
        registryId=ACCOUNT,
        repositoryName=repository,
        uploadId=upload["uploadId"],
        partFirstByte=0,
        partLastByte=len(data) - 1,
        layerPartBlob=data,
    )
    done = client.complete_layer_upload(
        registryId=ACCOUNT,
        repositoryName=repository,
        uploadId=upload["uploadId"],
        layerDigests=[digest_of(data)],
    )
    return str(done["layerDigest"])


def test_has_blob_asks_batch_check_layer_availability(aws: S3Endpoint) -> None:
    client = ecr_client()
    checks = counting(client, "BatchCheckLayerAvailability")
    registry = EcrRegistry(URL, client)
    name = repo()
    data = secrets.token_bytes(1000)

    assert not registry.has_blob(name, digest_of(data))  # no such repository
    registry.prepare(name)
    assert not registry.has_blob(name, digest_of(data))  # a failure entry: missing
    assert upload_layer(client, name, data) == digest_of(data)
    assert registry.has_blob(name, digest_of(data))
    assert not registry.has_blob(name, "sha256:nothex")  # a failure entry: invalid
    assert len(checks) == 4


def test_untag_removes_one_tag_through_batch_delete_image(aws: S3Endpoint) -> None:
    client = ecr_client()
    registry = EcrRegistry(URL, client)
    name = repo()
    registry.prepare(name)
    layer = upload_layer(client, name, b"a layer")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "x", "size": 2, "digest": digest_of(b"{}")},
            "layers": [{"mediaType": "y", "size": 7, "digest": layer}],
        }
    )
    for tag in ("web.B1", "worker.B1"):
        client.put_image(
            registryId=ACCOUNT, repositoryName=name, imageManifest=manifest, imageTag=tag
        )

    registry.untag(name, "web.B1")
    registry.untag(name, "never.pushed")
    registry.untag(repo(), "web.B1")  # no such repository: nothing to remove

    images = client.describe_images(registryId=ACCOUNT, repositoryName=name)["imageDetails"]
    assert [image["imageTags"] for image in images] == [["worker.B1"]]


# The data plane, through a real Distribution registry standing in for the token's endpoint.


@contextlib.contextmanager
def distribution(folder: Path, password: str) -> Iterator[str]:
    """A Distribution registry on 127.0.0.1 whose one user is `AWS` with `password`."""
    binary = shutil.which("docker-registry")
    assert binary is not None, "docker-registry is required (Debian package docker-registry)"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    (folder / "htpasswd").write_text(f"AWS:{hashed}\n")
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"auth:\n  htpasswd:\n    realm: ecr\n    path: {folder / 'htpasswd'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(folder / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    host = f"127.0.0.1:{port}"

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
        except urllib.error.HTTPError as err:
            return err.code == 401  # up, and asking for credentials
        return False

    try:
        eventually(answers)
        yield host
    finally:
        proc.terminate()
        proc.wait(10)


def through(host: str) -> Any:
    """A data plane that checks it is made for the token's endpoint, then talks plain HTTP
    to the local registry `host`."""

    def plane(endpoint: str, credentials: RegistryCredentials) -> Registry:
        assert endpoint == HOST
        assert credentials == RegistryCredentials("AWS", moto_password())
        return DistributionRegistry(host, credentials, timeout=10)

    return plane


@pytest.mark.docker
def test_a_push_goes_through_the_tokens_endpoint(aws: S3Endpoint, tmp_path: Path) -> None:
    with distribution(tmp_path, moto_password()) as host:
        registry = EcrRegistry(URL, ecr_client(), data_plane=through(host))
        name = repo()
        registry.prepare(name)
        assert registry.tags(name) == []
        assert registry.manifest(name, "web.B1") is None

        data = secrets.token_bytes(300_000)
        pieces = (data[i : i + 65536] for i in range(0, len(data), 65536))
        assert registry.upload_blob(name, digest_of(data), pieces) == len(data)
        assert b"".join(registry.read_blob(name, digest_of(data))) == data
        with pytest.raises(NotFound):
            registry.read_blob(name, digest_of(b"never uploaded"))

        put = push_image(registry, name, "web.B1", b"a layer")
        assert registry.manifest(name, "web.B1") == put
        assert put.digest == f"sha256:{hashlib.sha256(put.body).hexdigest()}"
        assert registry.tags(name) == ["web.B1"]
        other = repo()
        assert registry.mount_blob(other, digest_of(data), name)
        assert b"".join(registry.read_blob(other, digest_of(data))) == data


@pytest.mark.docker
def test_a_password_the_endpoint_refuses_fails_clearly(aws: S3Endpoint, tmp_path: Path) -> None:
    with distribution(tmp_path, "another password") as host:
        registry = EcrRegistry(URL, ecr_client(), data_plane=through(host))
        with pytest.raises(Internal, match=r"^registry 127\.0\.0\.1:\d+: POST .*: 401 ") as err:
            registry.upload_blob(repo(), digest_of(b"x"), [b"x"])
        assert moto_password() not in str(err.value)
        with pytest.raises(Internal, match=": 401 .*UNAUTHORIZED"):
            registry.tags(repo())


# Failures.


def stubbed(operation: str, code: str, status: int = 400) -> EcrRegistry:
    """An EcrRegistry whose ECR API answers `operation` with the error `code` once."""
    client = boto3.client(
        "ecr", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    stubber = Stubber(client)
    stubber.add_client_error(operation, code, "the message", http_status_code=status)
    stubber.activate()
    return EcrRegistry(URL, client)


@pytest.mark.parametrize(
    ("code", "error", "message"),
    [
        (
            "AccessDeniedException",
            FailedPrecondition,
            "ECR refused CreateRepository for app: the rack's AWS credentials lack "
            "ecr:CreateRepository (AccessDeniedException)",
        ),
        (
            "UnrecognizedClientException",
            FailedPrecondition,
            "ECR refused CreateRepository for app: the rack's AWS credentials are not valid "
            "(UnrecognizedClientException)",
        ),
        ("InvalidParameterException", InvalidArgument, "ECR refused CreateRepository for app: "),
        ("LimitExceededException", Internal, "(LimitExceededException)"),
        ("ThrottlingException", Unavailable, "ECR unavailable for CreateRepository"),
        ("KmsException", Internal, "ECR refused CreateRepository for app (KmsException)"),
    ],
)
def test_refusals_of_create_repository(code: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as caught:
        stubbed("create_repository", code).prepare("app")
    assert message in str(caught.value)


def test_a_refused_token_names_the_permission_and_hides_nothing_it_should_not() -> None:
    registry = stubbed("get_authorization_token", "AccessDeniedException")
    with pytest.raises(FailedPrecondition) as caught:
        registry.auth()
    assert str(caught.value) == (
        f"ECR refused GetAuthorizationToken for {HOST}: the rack's AWS credentials lack "
        "ecr:GetAuthorizationToken (AccessDeniedException)"
    )
    with pytest.raises(FailedPrecondition, match=r"lack ecr:BatchCheckLayerAvailability \("):
        stubbed("batch_check_layer_availability", "AccessDeniedException").has_blob(
            "app", digest_of(b"x")
        )


def test_a_server_error_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="^ECR unavailable for BatchDeleteImage"):
        stubbed("batch_delete_image", "InternalFailure", 500).untag("app", "web.B1")


def test_no_credentials_say_how_to_give_them(
    aws: S3Endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps credentials it found
    with pytest.raises(FailedPrecondition) as caught:
        EcrRegistry(URL).auth()
    assert str(caught.value) == (
        "no AWS credentials for ECR: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "or AWS_PROFILE"
    )


def test_an_unreachable_endpoint_is_unavailable(
    aws: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", dead)
    registry = EcrRegistry(URL)
    with pytest.raises(Unavailable, match=f"^ECR unreachable at {dead}$"):
        registry.prepare("app")
    with pytest.raises(Unavailable, match=f"^ECR unreachable at {dead}$"):
        registry.auth()


def test_a_failed_early_refresh_keeps_the_token_in_hand_until_it_expires(
    aws: S3Endpoint,
) -> None:
    from botocore.exceptions import EndpointConnectionError

    client = ecr_client()
    down = {"now": False}

    def fail(**_: Any) -> None:
        if down["now"]:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    client.meta.events.register("before-call.ecr.GetAuthorizationToken", fail)
    clock = Clock(EXPIRES - timedelta(hours=12))
    registry = EcrRegistry(URL, client, clock=clock)
    first = registry.auth()
    down["now"] = True
    clock.now = EXPIRES - timedelta(minutes=5)  # inside the margin, not yet expired
    assert registry.auth() == first
    clock.now = EXPIRES + timedelta(seconds=1)  # expired: the failure is the answer
    with pytest.raises(Unavailable, match="^ECR unreachable at"):
        registry.auth()
    down["now"] = False
    assert registry.auth() == first  # moto hands out the same password again
