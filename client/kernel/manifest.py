"""The one `convox.yml` schema: the subset a build reads (SPEC §4), read as Convox reads it,
used by the client to check the manifest and find the Dockerfiles it must send, and by the
rack to build.

`${VAR}` is replaced from the app environment before the YAML is parsed (a missing one by
nothing); the YAML is read as go-yaml reads it (`manifest_yaml`: anchors, merge keys plain
or quoted); unknown keys and sections are ignored; every structural problem is reported at
once under `validation errors:`, in Convox's words where Convox has some.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.kernel import manifest_yaml
from client.kernel.entries import DiskSource, Source, read_file, shown
from client.kernel.errors import InvalidArgument
from client.kernel.types import SERVICE_NAME

#: The largest manifest read, in bytes, before and after `${VAR}`s are replaced.
MAX_MANIFEST = 16 * 1024 * 1024
DEFAULT_MANIFEST = "convox.yml"
#: As Convox: anything between `${` and the next `}` names a variable.
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
#: The most violations a `validation errors:` message lists one by one.
MAX_LISTED = 20
#: Convox's own words for a bad name, which its users search for.
_NAME_RULE = "must contain only lowercase alphanumeric and dashes"


@dataclass(frozen=True)
class Service:
    """One service of the manifest: pulled when `image` is set, else built."""

    name: str
    #: The build context, relative to the source root (`.` by default).
    path: str = "."
    #: The Dockerfile, relative to `path`.
    dockerfile: str = "Dockerfile"
    image: str = ""
    #: The manifest's top-level `environment` entries, then the service's own.
    environment: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest and the text it came from (recorded on the build)."""

    text: str
    services: tuple[Service, ...]
    #: The top-level `environment` entries (each service's start with them).
    environment: tuple[str, ...] = ()


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Replaces every `${VAR}` with its value in `env` (empty when unset)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1), ""), text)


def parse(
    text: str, env: Mapping[str, str], check_env: bool = True, name: str = DEFAULT_MANIFEST
) -> Manifest:
    """Parses manifest text (from the file `name`, for messages); InvalidArgument says what
    is wrong with it. With `check_env`, a required key absent from `env` is an error too."""
    grows = sum(len(env.get(m.group(1), "")) - len(m.group(0)) for m in _VARIABLE.finditer(text))
    if len(text) + grows > MAX_MANIFEST:  # measured before the text is made
        raise InvalidArgument(
            f"{shown(name)} is larger than {MAX_MANIFEST} characters once its variables are set"
        )
    data = manifest_yaml.load(interpolate(text, env), name)
    if data is None:
        data = {}
    errors: list[str] = []
    if not isinstance(data, dict):
        raise InvalidArgument("validation errors:\nthe manifest must be a map")
    environment = _environment(data.get("environment"), "environment", errors)
    services = _services(data.get("services"), environment, errors)
    if errors:
        if len(errors) > MAX_LISTED:
            errors[MAX_LISTED - 1 :] = [f"and {len(errors) - MAX_LISTED + 1} more"]
        raise InvalidArgument("validation errors:\n" + "\n".join(errors))
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


def load(
    root: Path | Source, path: str, env: Mapping[str, str], check_env: bool = True
) -> Manifest:
    """Reads and parses the manifest at `path` inside the source (a folder, or a `Source`),
    and checks that every build path and Dockerfile stays inside it. The client checks a
    folder with this before packing it; the builder, the source it assembled."""
    source = DiskSource(root) if isinstance(root, Path) else root
    path = path or DEFAULT_MANIFEST
    text = read_file(source, path, MAX_MANIFEST).decode("utf-8", errors="replace")
    manifest = parse(text, env, check_env, name=path)
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


def _services(raw: Any, environment: tuple[str, ...], errors: list[str]) -> list[Service]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        errors.append("services must be a map of service names to services")
        return []
    services = []
    for name, body in raw.items():
        name = str(name)
        if not SERVICE_NAME.match(name):
            errors.append(f"service name {shown(name)} invalid, {_NAME_RULE}")
        service = _service(name, body, environment, errors)
        if service is not None:
            services.append(service)
    return services


def _service(
    name: str, body: Any, environment: tuple[str, ...], errors: list[str]
) -> Service | None:
    """One service; a service with no keys at all (`bar:`) builds `.` with `Dockerfile`."""
    label = f"service {shown(name)}"
    if body is None:
        body = {}
    if not isinstance(body, dict):
        errors.append(f"{label}: must be a map")
        return None
    path, dockerfile = ".", "Dockerfile"
    build = body.get("build")
    if isinstance(build, str):
        path = build or "."
    elif isinstance(build, dict):
        path = _string(build.get("path"), ".", f"{label}: build.path", errors)
        dockerfile = _string(
            build.get("manifest"), "Dockerfile", f"{label}: build.manifest", errors
        )
    elif build is not None:
        errors.append(f"{label}: build must be a path or a map")
    image = _string(body.get("image"), "", f"{label}: image", errors)
    own = _environment(body.get("environment"), f"{label}: environment", errors)
    return Service(name, path, dockerfile, image, (*environment, *own))


def _string(raw: Any, default: str, what: str, errors: list[str]) -> str:
    if raw is None or raw == "":
        return default
    if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        return str(raw)
    errors.append(f"{what} must be a string")
    return default


def _environment(raw: Any, what: str, errors: list[str]) -> tuple[str, ...]:
    """The entries of an `environment` list, as Convox takes them: strings, and the strings
    of a list inside it (an alias of a shared list); anything else is skipped."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(f"{what} must be a list")
        return ()
    entries: list[str] = []
    for entry in raw:
        if isinstance(entry, str):
            entries.append(entry)
        elif isinstance(entry, list):
            entries.extend(item for item in entry if isinstance(item, str))
    return tuple(entries)


def required_keys(manifest: Manifest) -> list[str]:
    """Keys some service names without a default (top-level entries count for every
    service), each once, in the order they first appear."""
    keys: dict[str, None] = {}
    for service in manifest.services:
        for entry in service.environment:
            entry = entry.strip()
            if entry and entry != "*" and "=" not in entry:
                keys.setdefault(entry)
    return list(keys)


def _check_required(manifest: Manifest, env: Mapping[str, str]) -> None:
    missing = sorted(key for key in required_keys(manifest) if key not in env)
    if missing:
        raise InvalidArgument(f"required env: {', '.join(missing)}")
