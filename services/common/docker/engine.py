"""`DockerEngine`: the one Docker engine adapter, through docker-py's low-level API.

The builder builds and pulls with it (every engine line reaches the build log as it
happens, and a cancelled scope stops the work) and pushes its images; the registry
service tags, pushes, pulls, saves and loads with it. Errors are translated by the one
table in `services.common.docker.errors`.

Timeouts, one policy for every caller:
- control calls (version, inspect, tag, remove, kill) answer at once: CONTROL_TIMEOUT;
- streams of images (push, pull, save, load) may sit quiet while a registry commits a
  large layer: STREAM_TIMEOUT between two reads;
- builds have no read timeout: a RUN step may print nothing for as long as it runs, and
  the build's own deadline and cancel stop it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
import requests

from client.kernel.entries import Source, sub
from client.kernel.errors import Internal, InvalidArgument, NotFound, SlipwayError
from client.kernel.streams import CHUNK_SIZE
from client.kernel.types import BUILDKIT, ENGINE_BUILDERS, LEGACY
from services.common.docker import errors
from services.common.docker.errors import translated
from services.common.docker.progress import PlainProgress
from services.common.docker.session import BuildSession
from services.common.docker.skopeo import load_oci_archive
from services.common.docker.streams import (
    LineSplitter,
    context_tar,
    event_of,
    log_message,
    shutdown,
)
from services.common.docker.types import (
    BuildSpec,
    Cancellable,
    EngineError,
    ImageInfo,
    LineSink,
    PushEvent,
)

log = logging.getLogger(__name__)

#: The build argument that makes BuildKit embed its layer cache in the image config, so a
#: builder that pulls the image gets cache hits from it (`cache-from`).
INLINE_CACHE_ARG = "BUILDKIT_INLINE_CACHE"

CONTROL_TIMEOUT = 120
STREAM_TIMEOUT = 300

_RUNNING_IN = re.compile(r"^\s*---> Running in ([0-9a-f]{12,64})\s*$")
_BUILT = re.compile(r"^Successfully built ([0-9a-f]{12,64})\s*$")


def _explanation(response: requests.Response) -> str:
    """The engine's error text of a refused request, bounded."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:1000]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])[:1000]
    return response.text[:1000]


def _not_a_local_image(text: str, status: int) -> SlipwayError:
    """image_id's classifier: a missing image and a name that cannot be one are absent."""
    return NotFound(text) if status in (400, 404) else EngineError(f"docker inspect failed: {text}")


class _Guarded:
    """The chunks of a stream the engine reads, keeping the error that stopped them (the
    engine's connection only says it was aborted)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        except BaseException as err:
            self.error = err
            raise


class DockerEngine:
    """The Docker engine at `host` (a DOCKER_HOST value), connected on first use, so a
    service starts (and reports Unavailable per call) while the engine is down."""

    def __init__(
        self,
        host: str,
        logins: Mapping[str, Mapping[str, str]] | None = None,
        builder: str = BUILDKIT,
    ) -> None:
        """`logins` maps a registry host to the credentials a pull from it sends (as
        `docker login` would have stored them), looked up at each pull, so a mapping whose
        credentials change (ECR's tokens) stays current; `builder` is the engine's builder
        that builds images: BUILDKIT, or LEGACY for engines without it."""
        if builder not in ENGINE_BUILDERS:
            raise InvalidArgument(
                f"unknown engine builder {builder!r}: expected one of {', '.join(ENGINE_BUILDERS)}"
            )
        self.host = host
        self.builder = builder
        self._logins: Mapping[str, Mapping[str, str]] = logins if logins is not None else {}
        self._lock = threading.Lock()
        self._control: docker.APIClient | None = None

    def close(self) -> None:
        with self._lock:
            if self._control is not None:
                self._control.close()
                self._control = None

    # -- builds and the builder's pulls ------------------------------------------------

    def build(self, spec: BuildSpec, on_line: LineSink, scope: Cancellable) -> str:
        """Builds `spec`, each output line to `on_line`; returns the image id. EngineError
        with the engine's text when the build fails."""
        if self.builder == LEGACY:
            if spec.secrets:
                raise InvalidArgument(
                    "build secrets need BuildKit; this rack uses the legacy builder"
                )
            return self._build_legacy(spec, on_line, scope)
        return self._build_buildkit(spec, on_line, scope)

    def _legacy_stream(
        self,
        spec: BuildSpec,
        context: Iterable[bytes],
        dockerfile_name: str,
        lines: LineSplitter,
        scope: Cancellable,
        containers: list[str],
    ) -> str:
        """Sends the context to the classic builder; the image id its messages name."""
        image_id = ""
        with self._stream(None, scope, containers) as api, translated(self.host, scope=scope):
            stream = api.build(
                fileobj=context,
                custom_context=True,
                dockerfile=dockerfile_name,
                nocache=spec.nocache,
                rm=True,
                forcerm=True,
                pull=False,
                target=spec.target or None,
                buildargs=dict(spec.buildargs),
                decode=True,
                timeout=None,
            )
            try:
                for message in stream:
                    text = errors.stream_text(message)
                    if text is not None:
                        raise EngineError(text)
                    image_id = log_message(message, lines) or image_id
            finally:
                lines.flush()
        return image_id

    def _build_buildkit(self, spec: BuildSpec, on_line: LineSink, scope: Cancellable) -> str:
        """A BuildKit build through the engine API (`POST /build?version=2`): its trace is
        rendered as plain progress; a cancel asks the engine to stop the build by its id
        and drops the connection. Secrets are served through a session for its length
        (opened for every build, so a missing secret is BuildKit's own error)."""
        dockerfile = os.path.normpath(os.path.join(spec.context, spec.dockerfile))
        build_id = uuid.uuid4().hex
        progress = PlainProgress(on_line)
        image_id = ""
        buildargs = {**spec.buildargs, INLINE_CACHE_ARG: "1"}
        params: dict[str, str] = {
            "version": "2",
            "buildid": build_id,
            "buildargs": json.dumps(buildargs),
            "cachefrom": json.dumps(list(spec.cache_from)),
            "rm": "1",
            "forcerm": "1",
            "pull": "0",
            "nocache": "1" if spec.nocache else "0",
        }
        if spec.target:
            params["target"] = spec.target

        def cancel_build() -> None:
            try:
                self._api().post(self._url("/build/cancel"), params={"id": build_id}, timeout=10)
            except Exception as err:  # noqa: BLE001 - the dropped connection stops it too
                log.debug("cancelling build %s: %s", build_id, err)

        # The Dockerfile's folder and the context are lent through the session, as the
        # Docker CLI lends them: the frontend applies the context's `.dockerignore` itself,
        # so files Slipway always uploads (an ignored Dockerfile or `.dockerignore`) stay
        # out of `COPY`, and only the files a step needs cross.
        params["remote"] = "client-session"
        params["dockerfile"] = os.path.basename(dockerfile)
        folders = {"context": spec.context, "dockerfile": os.path.dirname(dockerfile)}
        dirs: dict[str, Source | str] = dict(folders)
        if spec.source is not None:
            dirs = {name: sub(spec.source, path) for name, path in folders.items()}
        with contextlib.ExitStack() as stack:
            # Always a session: a Dockerfile that asks for a secret the build was not given
            # then fails with BuildKit's own words (`secret tok not found`).
            session = stack.enter_context(BuildSession(self.host, spec.secrets, dirs=dirs))
            params["session"] = session.id
            stack.callback(scope.on_cancel(cancel_build))
            api = stack.enter_context(self._stream(None, scope))
            stack.enter_context(translated(self.host, scope=scope))
            response = api.post(
                self._url("/build", api),
                params=params,
                data=b"",
                stream=True,
                timeout=None,
            )
            stack.callback(response.close)
            if response.status_code >= 400:
                raise docker.errors.APIError(
                    response.reason, response, explanation=_explanation(response)
                )
            try:
                for raw in response.iter_lines(chunk_size=None):
                    if not raw.strip():
                        continue
                    try:
                        message = json.loads(raw)
                    except ValueError:
                        continue
                    text = errors.stream_text(message)
                    if text is not None:
                        raise EngineError(text)
                    if message.get("id") == "moby.buildkit.trace":
                        progress.feed_aux(message.get("aux"))
                    elif message.get("id") == "moby.image.id":
                        aux = message.get("aux") or {}
                        image_id = str(aux.get("ID") or "") if isinstance(aux, dict) else ""
                    elif "stream" in message:
                        for line in str(message["stream"]).splitlines():
                            if line.strip():
                                on_line(line)
            finally:
                progress.close()
        if not image_id:
            raise EngineError(progress.last_error or "the engine did not report the built image")
        return image_id

    def _build_legacy(self, spec: BuildSpec, on_line: LineSink, scope: Cancellable) -> str:
        """Builds `spec` with the classic builder, each output line to `on_line`."""
        dockerfile = os.path.normpath(os.path.join(spec.context, spec.dockerfile))
        image_id = ""
        last_line = ""
        containers: list[str] = []

        def line(text: str) -> None:
            nonlocal last_line
            match = _RUNNING_IN.match(text)
            if match:
                containers.append(match.group(1))
            last_line = text
            on_line(text)

        lines = LineSplitter(line)
        with context_tar(spec.context, dockerfile, spec.source) as (context, dockerfile_name):
            sent = _Guarded(context)
            try:
                image_id = self._legacy_stream(
                    spec, sent, dockerfile_name, lines, scope, containers
                )
            except SlipwayError:
                if sent.error is None:
                    raise
                if isinstance(sent.error, SlipwayError):
                    raise sent.error from None
                raise Internal(f"cannot send the build context: {sent.error}") from None
        if not image_id:
            match = _BUILT.match(last_line)
            if not match:
                raise EngineError("the engine did not report the built image")
            image_id = match.group(1)
        return image_id

    def pull(self, image: str, on_line: LineSink, scope: Cancellable) -> str:
        """Pulls `image`, each status line to `on_line`; returns its id. EngineError with
        the engine's text when the pull fails."""
        repository, tag = docker.utils.parse_repository_tag(image)
        lines = LineSplitter(on_line)
        with self._stream(STREAM_TIMEOUT, scope) as api, translated(self.host, scope=scope):
            try:
                auth = self._logins.get(errors.host_of(image))
                messages = api.pull(
                    repository, tag=tag or None, stream=True, decode=True, auth_config=auth
                )
                for message in messages:
                    text = errors.stream_text(message)
                    if text is not None:
                        raise EngineError(text)
                    log_message(message, lines)
            finally:
                lines.flush()
        return self.inspect(image).id

    def inspect(self, image: str) -> ImageInfo:
        """NotFound when the engine does not have `image`."""
        with translated(self.host, errors.command_error("docker inspect", image)):
            attrs = self._api().inspect_image(image)
        config = attrs.get("Config") or {}
        entrypoint = tuple(str(part) for part in config.get("Entrypoint") or ())
        return ImageInfo(id=str(attrs["Id"]), entrypoint=entrypoint)

    # -- local images ------------------------------------------------------------------

    def image_id(self, image: str) -> str | None:
        """The id (`sha256:…`) of a local image named or identified by `image`, else None."""
        try:
            with translated(self.host, _not_a_local_image):
                return str(self._api().inspect_image(image)["Id"])
        except NotFound:
            return None

    def entrypoint(self, image: str) -> tuple[str, ...]:
        """The entrypoint of the local `image` (empty when it has none); NotFound when the
        engine does not know it."""
        return self.inspect(image).entrypoint

    def tag(self, image: str, repository: str, tag: str) -> None:
        """Gives the local `image` the name `repository:tag`."""
        with translated(self.host, errors.command_error("docker tag", image)):
            ok = self._api().tag(image, repository, tag=tag, force=True)
        if not ok:
            raise EngineError(f"docker tag {image} {repository}:{tag} failed")

    def remove(self, image: str) -> None:
        """Removes the name `image` (or the untagged image of that id); missing is fine."""
        with contextlib.suppress(NotFound):
            with translated(self.host, errors.command_error("docker rmi", image)):
                self._api().remove_image(image)

    # -- registries --------------------------------------------------------------------

    def push(
        self, repository: str, tag: str, auth: Mapping[str, str] | None = None
    ) -> Iterator[PushEvent]:
        """Pushes `repository:tag`, yielding its progress (the digest near the end)."""
        reference = f"{repository}:{tag}"
        registry = errors.registry_of(repository)

        def classify(text: str, status: int) -> SlipwayError:
            return errors.push_error(registry, reference, text)

        return self._transfer("push", repository, tag, auth, classify)

    def pull_events(
        self, repository: str, tag: str, auth: Mapping[str, str] | None = None
    ) -> Iterator[PushEvent]:
        """Pulls `repository:tag` (`tag` may be a `sha256:` digest), yielding its progress.
        NotFound when the registry has no such image, Unavailable when it cannot be reached."""
        sep = "@" if tag.startswith("sha256:") else ":"
        reference = f"{repository}{sep}{tag}"

        def classify(text: str, status: int) -> SlipwayError:
            return errors.pull_error(reference, text, status)

        return self._transfer("pull", repository, tag, auth, classify)

    def _transfer(
        self,
        direction: str,
        repository: str,
        tag: str,
        auth: Mapping[str, str] | None,
        classify: Callable[[str, int], SlipwayError],
    ) -> Iterator[PushEvent]:
        """A push or pull (`direction`) streamed as events; errors through `classify`."""
        with translated(self.host, classify), self._stream(STREAM_TIMEOUT) as api:
            messages = getattr(api, direction)(
                repository,
                tag=tag,
                stream=True,
                decode=True,
                auth_config=dict(auth) if auth else None,
            )
            for message in messages:
                text = errors.stream_text(message)
                if text is not None:
                    raise classify(text, 0)
                yield event_of(message)

    # -- image tars --------------------------------------------------------------------

    def save(self, images: Sequence[str]) -> Iterator[bytes]:
        """`docker save` of every image in one tar (shared layers stored once), streamed."""
        with translated(self.host, errors.save_error), self._stream(STREAM_TIMEOUT) as api:
            # docker-py saves one image per call; the engine API takes several. The URL is
            # made of public attributes and the call is the public requests.Session API
            # the APIClient inherits (which, unlike docker-py's own calls, sets no
            # timeout of itself).
            url = f"{api.base_url}/v{api.api_version}/images/get"
            names = {"names": list(images)}
            response = api.get(url, params=names, stream=True, timeout=api.timeout)
            try:
                try:
                    response.raise_for_status()
                except requests.exceptions.HTTPError as err:
                    # docker-py's public helper: raises the APIError the status means.
                    docker.errors.create_api_error_from_http_exception(err)
                yield from response.iter_content(CHUNK_SIZE)
            finally:
                response.close()

    def load(self, tar: Iterable[bytes]) -> None:
        """`docker load` of a `docker save` tar streamed in; InvalidArgument when the engine
        rejects it (a layer whose content does not match its digest, say)."""
        with translated(self.host, errors.load_error), self._stream(STREAM_TIMEOUT) as api:
            for message in api.load_image(iter(tar), quiet=True):
                text = errors.stream_text(message)
                if text is not None:
                    raise InvalidArgument(f"the engine refused the image tar: {text}")

    def load_oci(self, archive: Path, name: str) -> None:
        """Loads a one-image OCI-archive tar as the local image `name` (`repository:tag`)."""
        load_oci_archive(self.host, archive, name)

    # -- the local-rack supervisor ----------------------------------------------------

    def answers(self, timeout: float = 5.0) -> bool:
        """Whether the engine answers a ping within `timeout` seconds; never raises and
        logs nothing (a builder asks before each claim: a down engine is no news)."""
        try:
            api = docker.APIClient(base_url=self.host, version="auto", timeout=timeout)
        except (docker.errors.DockerException, requests.RequestException, OSError):
            return False
        try:
            return bool(api.ping())
        except (docker.errors.DockerException, requests.RequestException, OSError):
            return False
        finally:
            api.close()

    def import_rootfs(
        self, tar: Path, repository: str, tag: str, changes: Sequence[str] = ()
    ) -> None:
        """`docker import` of the root filesystem tar at `tar` as `repository:tag`, with
        Dockerfile `changes` (`CMD …`, `ENV …`). A named file, not a stream: the engine
        refuses docker-py's chunked import body."""
        with (
            translated(self.host, errors.command_error("docker import", str(tar))),
            self._stream(STREAM_TIMEOUT) as api,
        ):
            api.import_image(str(tar), repository=repository, tag=tag, changes=list(changes))

    # -- plumbing ----------------------------------------------------------------------

    def _url(self, path: str, api: docker.APIClient | None = None) -> str:
        """The engine API's URL for `path`, at the version the engine answered."""
        client = api or self._api()
        return f"{client.base_url}/v{client.api_version}{path}"

    def _api(self) -> docker.APIClient:
        """The shared client of control calls, made (asking the engine its API version)
        on first use."""
        with self._lock:
            if self._control is None:
                with translated(self.host):
                    self._control = docker.APIClient(
                        base_url=self.host, version="auto", timeout=CONTROL_TIMEOUT
                    )
            return self._control

    @contextlib.contextmanager
    def _stream(
        self,
        timeout: float | None,
        scope: Cancellable | None = None,
        containers: list[str] | None = None,
    ) -> Iterator[docker.APIClient]:
        """A client of its own for one streaming call, so cancelling `scope` shuts down
        exactly its connection (captured by a response hook) and kills the last container
        a RUN step started."""
        api = docker.APIClient(base_url=self.host, version=self._api().api_version, timeout=timeout)
        responses: list[requests.Response] = []

        def capture(response: requests.Response, *args: Any, **kwargs: Any) -> None:
            responses.append(response)
            if scope is not None and scope.cancelled:
                shutdown(response)

        def abort() -> None:
            for response in responses:
                shutdown(response)
            for container in (containers or [])[-1:]:
                self._kill(container)

        api.hooks["response"].append(capture)
        unregister = scope.on_cancel(abort) if scope is not None else (lambda: None)
        try:
            yield api
        finally:
            unregister()
            api.close()

    def _kill(self, container: str) -> None:
        """Best effort: the engine also stops the build when its client goes away."""
        control = self._api()
        for action in (
            lambda: control.kill(container),
            lambda: control.remove_container(container, force=True),
        ):
            try:
                action()
            except Exception as err:  # noqa: BLE001 - the container may already be gone
                log.debug("cleaning up container %s: %s", container, err)
