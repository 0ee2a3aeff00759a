"""`--json` output (SPEC §3): one JSON document on stdout, objects with snake_case keys,
times in RFC 3339 UTC, lists for the list commands."""

from __future__ import annotations

import json
import time

from rich.console import Console

from client.cli.render import app_status, write_line
from client.kernel import manifest, types
from client.kernel.errors import InvalidArgument


def rfc3339(when: float) -> str | None:
    """`2026-12-03T07:45:00Z`; None (JSON null) for an unset time."""
    if not when:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def emit(console: Console, document: object) -> None:
    """The document, indented, as the command's only output."""
    write_line(console, json.dumps(document, indent=2, ensure_ascii=False))


def app_json(app: types.App) -> dict[str, object]:
    return {
        "name": app.name,
        "status": app_status(app),
        "release": app.release,
        "created": rfc3339(app.created),
    }


def images_of(build: types.Build, registry: str) -> dict[str, str]:
    """`{service: reference}` of a complete build's images, as the rack pushed them."""
    if build.status != types.COMPLETE or not build.manifest:
        return {}
    try:
        services = manifest.parse(build.manifest, {}, check_env=False).services
    except InvalidArgument:
        return {}
    host = f"{registry}/" if registry else ""
    return {s.name: f"{host}{build.app}:{s.name}.{build.id}" for s in services}


def build_json(build: types.Build, registry: str = "") -> dict[str, object]:
    elapsed = (
        round(build.ended - build.started, 3)
        if build.terminal and build.started and build.ended
        else None
    )
    return {
        "id": build.id,
        "app": build.app,
        "status": build.status,
        "release": build.release,
        "description": build.description,
        "created": rfc3339(build.created),
        "started": rfc3339(build.started),
        "ended": rfc3339(build.ended),
        "elapsed_seconds": elapsed,
        "reason": build.reason,
        "git_sha": build.git_sha,
        "manifest": build.manifest,
        "entrypoint": build.entrypoint,
        "builder": build.builder,
        "images": images_of(build, registry),
    }


def release_json(release: types.Release, active: str = "") -> dict[str, object]:
    return {
        "id": release.id,
        "app": release.app,
        "status": "active" if release.id and release.id == active else "",
        "build": release.build,
        "description": release.description,
        "created": rfc3339(release.created),
        "env": dict(release.env),
        "manifest": release.manifest,
    }
