"""The one `convox.yml` schema: the subset a build reads (SPEC §4), used by the client to
find the Dockerfiles it must send and by the rack to build.

`${VAR}` is replaced from the app environment before the YAML is parsed; the YAML is read
as go-yaml reads it (`manifest_yaml`: anchors, merge keys plain or quoted); unknown keys
are ignored; every structural problem is reported at once under `validation errors:`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.kernel import manifest_yaml
from client.kernel.entries import DiskSource, Source, read_file
from client.kernel.errors import InvalidArgument
from client.kernel.types import SERVICE_NAME

#: The largest manifest read, in bytes.
MAX_MANIFEST = 16 * 1024 * 1024
DEFAULT_MANIFEST = "convox.yml"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Service:
    """One service of the manifest: pulled when `image` is set, else built."""

    name: str
    #: The build context, relative to the source root (`.` by default).
    path: str = "."
    #: The Dockerfile, relative to `path`.
    dockerfile: str = "Dockerfile"
    image: str = ""
    environment: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest and the text it came from (recorded on the build)."""

    text: str
    services: tuple[Service, ...]
    environment: tuple[str, ...] = ()


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replaces every `${VAR}` with its value in `env` (empty when unset)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1), ""), text)


def parse(
    text: str, env: Mapping[str, str], check_env: bool = True, name: str = DEFAULT_MANIFEST
) -> Manifest:
    """Parses manifest text (from the file `name`, for messages); InvalidArgument says what
    is wrong with it. With `check_env`, a required key absent from `env` is an error too."""
    data = manifest_yaml.load(interpolate(text, env), name)
    if data is None:
        data = {}
    errors: list[str] = []
    if not isinstance(data, dict):
        raise InvalidArgument("validation errors:\n  the manifest must be a map")
    environment = _environment(data.get("environment"), "environment", errors)
    services = _services(data.get("services"), errors)
    if errors:
        raise InvalidArgument("validation errors:\n" + "\n".join(f"  {e}" for e in errors))
    manifest = Manifest(text=text, services=tuple(services), environment=environment)
    if check_env:
        _check_required(manifest, env)
    return manifest


def dockerfiles(manifest: Manifest) -> list[str]:
    """The Dockerfiles of the services that build rather than pull, relative to the
    manifest's folder (`path/manifest`), in the manifest's order."""
    return [
        posixpath.join(s.path or ".", s.dockerfile or "Dockerfile")
        for s in manifest.services
        if not s.image
    ]


def load(root: Path | Source, path: str, env: Mapping[str, str]) -> Manifest:
    """Reads and parses the manifest at `path` inside the source (a folder, or a `Source`),
    and checks that every build path and Dockerfile stays inside it."""
    source = DiskSource(root) if isinstance(root, Path) else root
    path = path or DEFAULT_MANIFEST
    text = read_file(source, path, MAX_MANIFEST).decode("utf-8", errors="replace")
    manifest = parse(text, env, name=path)
    for service in manifest.services:
        if service.image:
            continue
        # As the build uses them: cleaned as Go's filepath.Join cleans, then followed.
        if source.resolve(posixpath.normpath(service.path)) is None:
            raise InvalidArgument(f"build path escapes the build folder: {service.path}")
        dockerfile = posixpath.normpath(posixpath.join(service.path, service.dockerfile))
        if source.resolve(dockerfile) is None:
            raise InvalidArgument(f"build manifest escapes the build folder: {service.dockerfile}")
    return manifest


def _services(raw: Any, errors: list[str]) -> list[Service]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        errors.append("services must be a map of service names to services")
        return []
    services = []
    for name, body in raw.items():
        name = str(name)
        if not SERVICE_NAME.match(name):
            errors.append(f"service {name}: invalid name (must match ^[a-z][a-z0-9-]*$)")
        service = _service(name, body, errors)
        if service is not None:
            services.append(service)
    return services


def _service(name: str, body: Any, errors: list[str]) -> Service | None:
    if body is None:
        body = {}
    if not isinstance(body, dict):
        errors.append(f"service {name}: must be a map")
        return None
    path, dockerfile = ".", "Dockerfile"
    build = body.get("build")
    if isinstance(build, str):
        path = build or "."
    elif isinstance(build, dict):
        path = _string(build.get("path"), ".", f"service {name}: build.path", errors)
        dockerfile = _string(
            build.get("manifest"), "Dockerfile", f"service {name}: build.manifest", errors
        )
    elif build is not None:
        errors.append(f"service {name}: build must be a path or a map")
    image = _string(body.get("image"), "", f"service {name}: image", errors)
    environment = _environment(body.get("environment"), f"service {name}: environment", errors)
    return Service(name, path, dockerfile, image, environment)


def _string(raw: Any, default: str, what: str, errors: list[str]) -> str:
    if raw is None or raw == "":
        return default
    if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        return str(raw)
    errors.append(f"{what} must be a string")
    return default


def _environment(raw: Any, what: str, errors: list[str]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(f"{what} must be a list")
        return ()
    entries = []
    for entry in raw:
        if isinstance(entry, (dict, list)) or entry is None:
            errors.append(f"{what}: entries must be KEY, KEY=default or *")
            continue
        entries.append(str(entry))
    return tuple(entries)


def required_keys(manifest: Manifest) -> list[str]:
    """Keys named without a default, top-level then per service, each once."""
    keys: list[str] = []
    entries = list(manifest.environment)
    for service in manifest.services:
        entries.extend(service.environment)
    for entry in entries:
        entry = entry.strip()
        if entry == "*" or "=" in entry or not entry or entry in keys:
            continue
        keys.append(entry)
    return keys


def _check_required(manifest: Manifest, env: Mapping[str, str]) -> None:
    missing = sorted(key for key in required_keys(manifest) if key not in env)
    if missing:
        raise InvalidArgument(f"required env: {', '.join(missing)}")
