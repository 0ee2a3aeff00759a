"""`slipway build [DIR]`: pack, upload, start, follow the log, report the outcome."""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Mapping, Sequence

from client import gitinfo, packing, types
from client.commands import Context
from client.commands.follow import follow_build
from client.errors import InvalidArgument, SlipwayError
from client.render import step, transfer, write_line
from client.types import BuildRequest

_GIT_URL = re.compile(r"^(https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:")


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "build",
        parents=[common],
        help="build the app from a folder",
        description=(
            "Packs DIR (default: the current folder), uploads it to the rack, builds it as "
            "convox.yml says and prints the build log as it happens."
        ),
    )
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="the source folder")
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
        "--id",
        action="store_true",
        help="print only the release id on stdout, everything else on stderr",
    )
    p.set_defaults(func=run)


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


def run(ctx: Context, args: argparse.Namespace) -> int:
    if _GIT_URL.match(args.dir):
        raise InvalidArgument("building from a git URL is not supported by this client yet")
    folder = ctx.cwd / args.dir
    if not folder.is_dir():
        raise InvalidArgument(f"no such directory: {args.dir}")
    build_args = parse_build_args(args.build_args, ctx.env)
    app = ctx.app(args.dir)
    out = ctx.err if args.id else ctx.out
    rack = ctx.rack()

    description, git_sha = args.description or "", ""
    described = gitinfo.describe(folder)
    if described:
        git_sha = described[0]
        description = description or described[1]

    with tempfile.TemporaryFile(prefix="slipway-source-") as source:
        with step(out, "Packaging source"):
            size, sha256 = packing.pack(folder, source, args.manifest)
        source.seek(0)
        with transfer(out, "Uploading source", size) as sent:
            archive = rack.archive.upload(app, source, size, sha256, sent)

    with step(out, "Starting build"):
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
            )
        )

    try:
        followed = follow_build(rack.builder, build.id, out, ctx.err, sleep=ctx.sleep)
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
    return _outcome(ctx, final, args.id)


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
