"""Amazon ECR as the rack registry (`--registry ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com`).

ECR is two things: a control plane, the ECR API through boto3 (the usual AWS environment,
`AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_ECR` included), and a data plane, a Distribution
registry at the token's `proxyEndpoint`, over HTTPS, with basic auth `AWS:<password>`.

The control plane creates repositories (ECR has none until asked: `prepare`), tells which
blobs a repository holds, removes single tags, and hands out the 12-hour token; everything
else goes through a `DistributionRegistry` for the token's endpoint, so there is one HTTP
registry client. The token is cached and fetched again under a lock once it is within
`REFRESH_MARGIN` of its expiry; the data-plane registry is rebuilt with it. Every botocore
failure goes through one table (`_map_errors`); no message or log carries the token.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from client.kernel.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    SlipwayError,
    Unavailable,
)
from services.common.config import RegistryCredentials
from services.common.oci import BlobUpload, DistributionRegistry, Manifest, Registry

log = logging.getLogger(__name__)

# A token is fetched again this long before ECR says it expires (tokens last 12 hours).
REFRESH_MARGIN = timedelta(minutes=15)
_HOST = re.compile(r"^(?P<account>[^.]*)\.dkr\.ecr\.(?P<region>[^.]*)\.amazonaws\.com\Z")
_ACCOUNT = re.compile(r"^[0-9]{12}\Z")
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}\Z")
# Error codes of credentials ECR does not accept at all (as opposed to lacking a permission).
_BAD_CREDENTIALS = {
    *("UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException"),
    *("InvalidClientTokenId", "SignatureDoesNotMatch", "MissingAuthenticationTokenException"),
}
_PASSING = ("ThrottlingException", "ServiceUnavailableException", "ServerException")

DataPlane = Callable[[str, RegistryCredentials], Registry]
"""Makes the data-plane registry from the token's endpoint host and credentials."""


@dataclass(frozen=True)
class EcrUrl:
    """An ECR registry as `parse_ecr_url` reads it."""

    account: str
    region: str
    host: str
    """`ACCOUNT.dkr.ecr.REGION.amazonaws.com`, as image references name it."""


def parse_ecr_url(url: str) -> EcrUrl:
    """`ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com` read, else InvalidArgument saying why."""
    shown = url if len(url) <= 100 else url[:100] + "…"

    def refuse(why: str) -> InvalidArgument:
        return InvalidArgument(
            f"invalid ECR registry {shown!r}: {why} "
            "(expected ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com)"
        )

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("not a URL") from None
    if parts.scheme != "ecr":
        raise refuse("the scheme must be ecr://")
    if parts.path or parts.query or parts.fragment:
        raise refuse("no path may follow the host")
    if port is not None or ":" in parts.netloc or "@" in parts.netloc:
        raise refuse("no port or user may be given")
    host = parts.netloc.lower()
    match = _HOST.match(host)
    if match is None:
        raise refuse("the host must be ACCOUNT.dkr.ecr.REGION.amazonaws.com")
    if not _ACCOUNT.match(match["account"]):
        raise refuse("the account must be 12 digits")
    if not _REGION.match(match["region"]):
        raise refuse("the region must be an AWS region such as us-east-1")
    return EcrUrl(match["account"], match["region"], host)


@dataclass(frozen=True)
class _Token:
    username: str
    password: str = field(repr=False)
    endpoint: str
    """The data plane's host, from `proxyEndpoint`."""
    expires: datetime


class EcrRegistry:
    """The registry `url` through `client` (boto3's ECR client for its region by default)
    and, for the bytes, `data_plane` (HTTPS, verified with `tls` or the system's
    certificate authorities). `clock` returns aware datetimes (UTC by default)."""

    def __init__(
        self,
        url: EcrUrl,
        client: Any = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        data_plane: DataPlane | None = None,
        tls: ssl.SSLContext | None = None,
        margin: timedelta = REFRESH_MARGIN,
    ) -> None:
        if client is None:
            try:
                import boto3  # the rack extra's; only racks on ECR need it
                from botocore.config import Config
            except ImportError as err:
                raise Unavailable(f"boto3 is not installed ({err}): slipway[rack]") from None

            config = Config(connect_timeout=10, read_timeout=60, retries={"mode": "standard"})
            client = boto3.client("ecr", region_name=url.region, config=config)
        self.url = url
        self._ecr = client
        self._clock = clock
        context = tls or ssl.create_default_context()
        self._data_plane = data_plane or (
            lambda host, credentials: DistributionRegistry(host, credentials, tls=context)
        )
        self._margin = margin
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self._plane: Registry | None = None
        self._prepared: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> EcrRegistry:
        return cls(parse_ecr_url(url), **kwargs)

    @property
    def host(self) -> str:
        return self.url.host

    # The control plane.

    def prepare(self, repository: str) -> None:
        with self._lock:
            if repository in self._prepared:
                return
        from botocore.exceptions import ClientError

        with self._map_errors("CreateRepository", repository):
            try:
                self._ecr.create_repository(registryId=self.url.account, repositoryName=repository)
                log.info("created the ECR repository %s in %s", repository, self.host)
            except ClientError as err:
                if _code(err) != "RepositoryAlreadyExistsException":
                    raise
        with self._lock:
            self._prepared.add(repository)

    def auth(self) -> Mapping[str, str] | None:
        token = self._current()[0]
        return {"username": token.username, "password": token.password, "serveraddress": self.host}

    def has_blob(self, repository: str, digest: str) -> bool:
        try:
            with self._map_errors("BatchCheckLayerAvailability", repository):
                answer = self._ecr.batch_check_layer_availability(
                    registryId=self.url.account, repositoryName=repository, layerDigests=[digest]
                )
        except NotFound:
            return False
        # A missing or malformed digest is a failure entry, not a layer.
        return any(
            layer.get("layerDigest") == digest and layer.get("layerAvailability") == "AVAILABLE"
            for layer in answer.get("layers") or []
        )

    def untag(self, repository: str, tag: str) -> None:
        # ECR removes a tag alone, and the image with its last tag (BatchDeleteImage).
        try:
            with self._map_errors("BatchDeleteImage", repository):
                answer = self._ecr.batch_delete_image(
                    registryId=self.url.account,
                    repositoryName=repository,
                    imageIds=[{"imageTag": tag}],
                )
        except NotFound:
            return
        for failure in answer.get("failures") or []:
            if (code := failure.get("failureCode")) != "ImageNotFound":  # missing: gone already
                raise Internal(f"ECR cannot remove the tag {repository}:{tag} ({code})")

    def _current(self) -> tuple[_Token, Registry]:
        """The token, fetched again when it is near its expiry, and its data plane."""
        with self._lock:  # one refresh at a time; the others wait for its token
            now = self._clock()
            if self._token is None or now >= self._token.expires - self._margin:
                try:
                    self._token = self._fetch_token()
                except SlipwayError as err:
                    if self._token is None or now >= self._token.expires:
                        raise
                    # Early refresh failed; the token in hand is still good.
                    log.warning("cannot refresh the ECR token of %s yet: %s", self.host, err)
                    assert self._plane is not None
                    return self._token, self._plane
                credentials = RegistryCredentials(self._token.username, self._token.password)
                self._plane = self._data_plane(self._token.endpoint, credentials)
            assert self._plane is not None
            return self._token, self._plane

    def _fetch_token(self) -> _Token:
        with self._map_errors("GetAuthorizationToken", self.host):
            data = self._ecr.get_authorization_token(registryIds=[self.url.account])
        try:
            entry = data["authorizationData"][0]
            pair = base64.b64decode(entry["authorizationToken"], validate=True).decode()
            username, sep, password = pair.partition(":")
            endpoint = urllib.parse.urlsplit(entry["proxyEndpoint"]).netloc
            expires = entry["expiresAt"]
            if not (sep and username and password and endpoint):
                raise ValueError
        except (KeyError, IndexError, TypeError, ValueError):  # a bad base64 is a ValueError
            raise Internal(f"ECR returned no usable authorization token for {self.host}") from None
        log.info("ECR token for %s fetched (endpoint %s, expires %s)", self.host, endpoint, expires)
        return _Token(username, password, endpoint, expires)

    @contextlib.contextmanager
    def _map_errors(self, action: str, subject: str) -> Iterator[None]:
        """The one table from botocore's failures of the ECR API `action` to Slipway's."""
        from botocore import exceptions as boto

        try:
            yield
        except boto.ClientError as err:
            code = _code(err) or "no error code"
            status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            refused = f"ECR refused {action} for {subject}"
            if code.startswith("AccessDenied"):
                raise FailedPrecondition(
                    f"{refused}: the rack's AWS credentials lack ecr:{action} ({code})"
                ) from None
            if code in _BAD_CREDENTIALS:
                raise FailedPrecondition(
                    f"{refused}: the rack's AWS credentials are not valid ({code})"
                ) from None
            if code == "RepositoryNotFoundException":
                raise NotFound.of("ECR repository", subject) from None
            if code == "InvalidParameterException":
                text = str(err.response.get("Error", {}).get("Message", ""))[:200]
                raise InvalidArgument(f"{refused}: {text}") from None
            if code in _PASSING or status >= 500:
                raise Unavailable(f"ECR unavailable for {action} ({code})") from None
            raise Internal(f"{refused} ({code})") from None
        except (boto.NoCredentialsError, boto.PartialCredentialsError):
            raise FailedPrecondition(
                "no AWS credentials for ECR: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE"
            ) from None
        except (boto.ConnectionError, boto.HTTPClientError) as err:
            log.warning("ECR %s: %s", action, err)
            raise Unavailable(f"ECR unreachable at {self._ecr.meta.endpoint_url}") from None
        except boto.BotoCoreError as err:
            log.warning("ECR %s: %s", action, err)
            raise Internal(f"ECR {action} for {subject} failed ({type(err).__name__})") from None

    # The data plane.

    def tags(self, repository: str) -> list[str]:
        return self._current()[1].tags(repository)

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        return self._current()[1].manifest(repository, reference)

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> None:
        self._current()[1].put_manifest(repository, tag, manifest)

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        return self._current()[1].mount_blob(repository, digest, source)

    def read_blob(self, repository: str, digest: str, verify: bool = True) -> Iterator[bytes]:
        return self._current()[1].read_blob(repository, digest, verify)

    def upload_blob(self, repository: str, digest: str, chunks: Iterable[bytes]) -> int:
        return self._current()[1].upload_blob(repository, digest, chunks)

    def start_upload(self, repository: str) -> BlobUpload:
        return self._current()[1].start_upload(repository)


def _code(err: Any) -> str:
    """A botocore ClientError's error code."""
    return str(err.response.get("Error", {}).get("Code", ""))
