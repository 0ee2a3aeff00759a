"""Image tars inside an export: `docker save` tars (their `manifest.json` names the images)
and OCI-archive tars (an `oci-layout` marker, one image each)."""

from __future__ import annotations

import copy
import hashlib
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from client.kernel.errors import InvalidArgument
from client.kernel.streams import iter_chunks, reader
from services.registry.tarstream import TarWriter

MANIFEST_JSON = "manifest.json"
REPOSITORIES = "repositories"
OCI_LAYOUT = "oci-layout"
DOCKER = "docker"
OCI = "oci"
# manifest.json and repositories list a few images: anything bigger is not one of them.
MAX_JSON = 16 * 1024 * 1024

#: Maps a `repository:tag` name to its new name, or None to drop it.
Rename = Callable[[str], str | None]


@dataclass(frozen=True)
class SavedImage:
    """One image of a `docker save` tar."""

    #: Its id, the sha256 of its config (what `docker load` names it by).
    id: str
    #: The names manifest.json gives it, `repository:tag`.
    repo_tags: tuple[str, ...]


def split_name(name: str) -> tuple[str, str]:
    """`host:5000/app:web.B1` → (`host:5000/app`, `web.B1`); the tag is empty when absent."""
    repository, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        return name, ""
    return repository, tag


def retag(tar: Iterable[bytes], rename: Rename) -> Iterator[bytes]:
    """Copies a `docker save` tar stream, renaming the images in its manifest.json and
    repositories files; every other member passes through untouched, chunk by chunk."""
    writer = TarWriter()
    try:
        with tarfile.open(fileobj=reader(tar), mode="r|") as source:
            for member in source:
                name = member.name.removeprefix("./")
                data = source.extractfile(member) if member.isreg() else None
                if data is not None and name in (MANIFEST_JSON, REPOSITORIES):
                    doc = parse_json(data.read(MAX_JSON + 1), name)
                    new: Any = (
                        _rename_manifest(doc, rename)
                        if name == MANIFEST_JSON
                        else _rename_repositories(doc, rename)
                    )
                    body = json.dumps(new).encode()
                    info = copy.copy(member)
                    info.size = len(body)
                    yield from writer.member(info, [body])
                else:
                    body_chunks = iter_chunks(cast(BinaryIO, data)) if data else ()
                    yield from writer.member(member, body_chunks)
    except (tarfile.TarError, EOFError) as err:
        raise InvalidArgument(f"invalid image tar: {err}") from None
    yield writer.end()


def parse_json(data: bytes, name: str) -> Any:
    if len(data) > MAX_JSON:
        raise InvalidArgument(f"invalid image tar: {name} is too large")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"invalid image tar: {name}: {err}") from None


def _rename_manifest(doc: Any, rename: Rename) -> list[dict[str, Any]]:
    images = _entries(doc)
    for image in images:
        tags = [new for tag in image.get("RepoTags") or [] if (new := rename(str(tag)))]
        image["RepoTags"] = tags or None
    return images


def _rename_repositories(doc: Any, rename: Rename) -> dict[str, dict[str, str]]:
    renamed: dict[str, dict[str, str]] = {}
    for repository, tags in (doc or {}).items():
        for tag, layer in (tags or {}).items():
            new = rename(f"{repository}:{tag}")
            if new:
                repo, new_tag = split_name(new)
                renamed.setdefault(repo, {})[new_tag] = layer
    return renamed


def _entries(doc: Any) -> list[dict[str, Any]]:
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc):
        raise InvalidArgument(f"invalid image tar: {MANIFEST_JSON} is not a list of images")
    return doc


def kind_of(path: Path) -> str:
    """DOCKER for a `docker save` tar (it has manifest.json), OCI for an OCI archive;
    InvalidArgument for anything else."""
    names = _names(path)
    if MANIFEST_JSON in names:
        return DOCKER
    if OCI_LAYOUT in names:
        return OCI
    raise InvalidArgument(f"not an image tar: no {MANIFEST_JSON} or {OCI_LAYOUT}")


def saved_images(path: Path) -> list[SavedImage]:
    """The images of a `docker save` tar on disk, their ids computed from their configs."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
            images = []
            for entry in _entries(
                parse_json(member_bytes(tar, members, MANIFEST_JSON), MANIFEST_JSON)
            ):
                config = str(entry.get("Config") or "")
                tags = tuple(str(t) for t in entry.get("RepoTags") or [])
                images.append(SavedImage(id=member_digest(tar, members, config), repo_tags=tags))
            return images
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InvalidArgument(f"invalid image tar: {err}") from None


def _names(path: Path) -> set[str]:
    try:
        with tarfile.open(path, mode="r:") as tar:
            return {m.name.removeprefix("./") for m in tar.getmembers()}
    except (tarfile.TarError, EOFError, OSError) as err:
        raise InvalidArgument(f"not an image tar: {err}") from None


def member(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> Any:
    member = members.get(name.removeprefix("./"))
    source = tar.extractfile(member) if member is not None else None
    if source is None:
        raise InvalidArgument(f"invalid image tar: {name or 'a config'} is missing")
    return source


def member_digest(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> str:
    """`sha256:` of a member's bytes, read in pieces (an image's id, of its config)."""
    digest = hashlib.sha256()
    for data in iter_chunks(member(tar, members, name)):
        digest.update(data)
    return f"sha256:{digest.hexdigest()}"


def member_bytes(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> bytes:
    return bytes(member(tar, members, name).read(MAX_JSON + 1))
