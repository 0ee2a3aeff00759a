"""`slipway build [DIR]`: pack, upload, start, follow the log, report the outcome.

DIR may be a git URL (`URL#ref`): the rack then fetches the repository itself, and the
build starts on the archive it made."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.filesize import decimal

from client.api.upload import ContextUpload, Uploaded
from client.cli import gitinfo
from client.cli.commands import Context, require_app
from client.cli.commands.follow import follow_build
from client.cli.digestcache import DigestCache
from client.cli.render import (
    format_duration,
    silence_stdout,
    step,
    transfer,
    watching,
    write_line,
)
from client.kernel import context as packing
from client.kernel import manifest, types
from client.kernel.errors import InvalidArgument, SlipwayError
from client.kernel.types import BuildRequest, check_app_name

if TYPE_CHECKING:
    from client.api.rack import Rack

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "build",
        parents=[common],
        help="build the app from a folder or a git repository",
        description=(
            "Packs DIR (default: the current folder), uploads it to the rack, builds it as "
            "convox.yml says and prints the build log as it happens. DIR may also be a git "
            "URL (https://, http://, ssh://, git://, file:// or user@host:path) with an "
            "optional #ref (branch, tag or commit): the rack then clones it itself."
        ),
    )
    add_flags(p)
    p.set_defaults(func=run)


def add_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `slipway build`, which `slipway deploy` shares."""
    p.add_argument(
        "dir", nargs="?", default=".", metavar="DIR", help="the source folder or git URL[#ref]"
    )
    p.add_argument("-d", "--description", help="the build's description")
    p.add_argument(
        "-m",
        "--manifest",
        default=packing.DEFAULT_MANIFEST,
        metavar="FILE",
        help="the manifest inside DIR (default: convox.yml)",
    )
    p.add_argument("--no-cache", action="store_true", help="build without the layer cache")
    p.add_argument(
        "--development",
        action="store_true",
        help="build the `development` stage of Dockerfiles that have one",
    )
    p.add_argument(
        "--build-args",
        action="append",
        default=[],
        metavar="K=V",
        help="a Dockerfile ARG value (repeatable); a bare K takes $K",
    )
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="id=ID,src=FILE|env=VAR",
        help="a build secret for RUN --mount=type=secret,id=ID (repeatable), read from "
        "FILE or $VAR; never stored or logged",
    )
    p.add_argument(
        "--timeout",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="stop the build and fail it when it runs longer (90s, 10m, 2h; default 60m)",
    )
    p.add_argument(
        "--id",
        action="store_true",
        help="print only the release id on stdout, everything else on stderr",
    )


def _duration(text: str) -> float:
    try:
        return types.parse_duration(text)
    except InvalidArgument as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_build_args(values: Sequence[str], env: Mapping[str, str]) -> dict[str, str]:
    """`K=V` pairs (V may hold anything, `=` included); a bare `K` takes `env[K]`."""
    args: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not key:
            raise InvalidArgument(f"invalid build arg: {value!r} (want K=V or K)")
        if not sep:
            if key not in env:
                raise InvalidArgument(f"build arg {key} is not set in the environment")
            rest = env[key]
        args[key] = rest
    return args


def parse_secrets(values: Sequence[str], env: Mapping[str, str], cwd: Path) -> dict[str, bytes]:
    """`--secret` values as `docker buildx build --secret` takes them: `id=ID` with
    `src=FILE` (or `source=`) or `env=VAR`, optionally `type=file|env`; a bare `id=ID`
    reads $ID when it is set, else the file ID. Errors name the flag, never a value."""
    found: dict[str, bytes] = {}
    for value in values:
        fields: dict[str, str] = {}
        for part in value.split(","):
            key, sep, rest = part.partition("=")
            key = key.strip().lower()
            if not sep or key not in ("id", "src", "source", "env", "type") or key in fields:
                raise InvalidArgument("invalid --secret: want id=ID,src=FILE or id=ID,env=VAR")
            fields["src" if key == "source" else key] = rest
        ident = fields.get("id", "")
        kind = fields.get("type", "")
        if kind not in ("", "file", "env") or not ident or ("src" in fields and "env" in fields):
            raise InvalidArgument("invalid --secret: want id=ID,src=FILE or id=ID,env=VAR")
        if "env" in fields or (kind == "env" and "src" not in fields):
            var = fields.get("env") or ident
            if var not in env:
                raise InvalidArgument(f"secret {ident}: ${var} is not set in the environment")
            data = env[var].encode()
        else:
            src = fields.get("src") or ("" if kind == "file" else ident)
            if "src" not in fields and kind == "" and ident in env:
                data = env[ident].encode()
            else:
                data = _read_secret(ident, cwd / Path(src).expanduser() if src else Path())
        if ident in found:
            raise InvalidArgument(f"secret {ident} is given twice")
        found[ident] = data
    types.check_secrets(found)
    return found


def _read_secret(ident: str, path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(types.MAX_SECRET_BYTES + 1)
    except OSError as err:
        raise InvalidArgument(
            f"secret {ident}: cannot read {path.name or 'its file'}: {err.strerror}"
        ) from None
    return data


def run(ctx: Context, args: argparse.Namespace) -> int:
    return execute(ctx, args)


def execute(
    ctx: Context,
    args: argparse.Namespace,
    then: Callable[[Rack, types.Build], None] | None = None,
) -> int:
    """Runs a build as `slipway build` does; `then(rack, build)` runs after it completed."""
    from_git = gitinfo.is_git_url(args.dir)
    if not from_git and not (ctx.cwd / args.dir).is_dir():
        raise InvalidArgument(f"no such directory: {args.dir}")
    build_args = parse_build_args(args.build_args, ctx.env)
    secrets = parse_secrets(args.secret, ctx.env, ctx.cwd)
    app = _git_app(ctx, args.dir) if from_git else ctx.app(args.dir)
    # The log is the command's data; the status lines go to stderr off a terminal (SPEC §3).
    out = ctx.err if args.id else ctx.out
    status = ctx.status_for(args.id)
    rack = ctx.rack()

    require_app(rack, app)  # before anything is packed
    if not from_git:  # read as the builder reads it, ${VAR}s from the app's latest release
        releases = rack.metadata.list_releases(app, limit=1)
        env = dict(releases[0].env) if releases else {}
        manifest.load(ctx.cwd / args.dir, args.manifest, env, check_env=False)
    if from_git:
        archive, git_sha, described = _fetch(rack, status, app, args.dir, args.manifest)
    else:
        archive, git_sha, described = _upload(rack, status, app, ctx, args.dir, args.manifest)
    description = args.description or described

    with step(status, "Starting build"):
        build = rack.builder.start_build(
            BuildRequest(
                app=app,
                archive=archive,
                description=description,
                manifest=args.manifest,
                no_cache=args.no_cache,
                development=args.development,
                build_args=build_args,
                git_sha=git_sha,
                secrets=secrets,
                timeout=args.timeout,
            )
        )

    try:
        try:
            followed = follow_build(
                rack.builder, build.id, out, ctx.err, sleep=ctx.sleep, reports_failure=True
            )
        except BrokenPipeError:
            # The reader left (`slipway deploy | head`): the build goes on, so the command
            # sees it to its end quietly; its outcome (exit code, promotion) still counts.
            if out.file is sys.stdout:
                silence_stdout()
            out.file = open(os.devnull, "w")  # noqa: SIM115 - as long as the command runs
            followed = follow_build(
                rack.builder, build.id, out, ctx.err, sleep=ctx.sleep, reports_failure=True
            )
    except KeyboardInterrupt:
        target = ctx.target(app)
        ctx.err.print()
        ctx.err.print(f"Build {build.id} goes on in the background.")
        ctx.err.print(f"Follow it with: slipway builds logs {build.id} {target}")
        ctx.err.print(f"Cancel it with: slipway builds cancel {build.id} {target}")
        return 130

    final = rack.metadata.get_build(build.id, app)
    if not final.terminal and followed.build is not None:
        final = followed.build  # the record store lags the stream; trust the stream
    code = _outcome(ctx, final, args.id)
    if then is not None:
        then(rack, final)
    return code


def _git_app(ctx: Context, source: str) -> str:
    """`-a NAME`, else the repository's name."""
    if ctx.app_flag:
        return ctx.app()
    try:
        return check_app_name(gitinfo.repo_name(gitinfo.split_ref(source)[0]))
    except InvalidArgument as err:
        raise InvalidArgument(f"{err}; it comes from the repository name, pass -a NAME") from None


def _upload(
    rack: Rack, status: Console, app: str, ctx: Context, folder: str, manifest: str
) -> tuple[str, str, str]:
    """Packs and uploads a folder: (archive id, git sha, default description)."""
    path = ctx.cwd / folder
    git_sha, description = gitinfo.describe(path) or ("", "")
    with DigestCache.open(ctx.env, str(path)) as cache:
        upload = ContextUpload(rack.archive, app, path, manifest, cache)
        # What the rack lacks starts on its way while the walk goes on.
        with watching(status, "Packaging source", lambda: _packed(upload.result)):
            upload.scan()
        with transfer(status, "Uploading source", upload.to_send) as sent:
            done = upload.finish(sent)
    log.info(
        "uploaded %s: %d entries, %d bytes; %d files read, %d sent (%d bytes), %d resumes",
        done.id,
        done.entries,
        done.bytes,
        done.read,
        done.sent_files,
        done.sent_bytes,
        done.resumed,
    )
    return done.id, git_sha, description


def _packed(done: Uploaded) -> str:
    """How far packing is: `1,204 files (88.1 MB), 40.2 MB hashed, 12.0 MB sent`."""
    return (
        f"{done.files:,} files ({decimal(done.bytes)}), "
        f"{decimal(done.read_bytes)} hashed, {decimal(done.sent_bytes)} sent"
    )


def _fetch(
    rack: Rack, status: Console, app: str, source: str, manifest: str
) -> tuple[str, str, str]:
    """Has the rack fetch a repository: (archive id, git sha, default description)."""
    url, ref = gitinfo.split_ref(source)
    began = time.monotonic()  # the rack says nothing until it has cloned: show the clock
    with watching(status, "Fetching source", lambda: format_duration(time.monotonic() - began)):
        fetched = rack.archive.fetch_git(app, url, ref, manifest)
    return fetched.id, fetched.commit, gitinfo.description(fetched.commit, fetched.subject)


def _outcome(ctx: Context, build: types.Build, only_id: bool) -> int:
    """Exit status from the build record; the ids on success."""
    if build.status == types.FAILED:
        raise SlipwayError("build failed" + (f": {build.reason}" if build.reason else ""))
    if build.status == types.CANCELLED:
        raise SlipwayError("build cancelled")
    if build.status != types.COMPLETE:
        raise SlipwayError(f"build {build.id} did not finish (status {build.status or 'unknown'})")
    console = ctx.err if only_id else ctx.out
    write_line(console, f"Build:   {build.id}")
    write_line(console, f"Release: {build.release}")
    if only_id:
        write_line(ctx.out, build.release)
    return 0
