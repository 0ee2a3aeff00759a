"""`slipway releases` and its subcommands: list, info, promote."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich.console import Console

from client.api.metadata import MetadataClient
from client.cli.commands import Context
from client.cli.jsonout import emit, release_json
from client.cli.render import humanize_since, key_blocks, table, write_line
from client.kernel import types
from client.kernel.environment import env_lines
from client.kernel.errors import InvalidArgument


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "releases",
        parents=[common],
        help="list and promote releases",
        description="Lists the app's releases, newest first; STATUS is `active` for the "
        "promoted one.",
    )
    p.add_argument(
        "--limit", type=int, default=10, metavar="N", help="how many releases to list (default 10)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=list_releases)
    sub = p.add_subparsers(dest="releases_command", metavar="COMMAND")

    info = sub.add_parser("info", parents=[common], help="show a release and its environment")
    info.add_argument("release", metavar="RELEASE")
    info.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
    )
    info.set_defaults(func=show_release)

    promote = sub.add_parser(
        "promote",
        parents=[common],
        help="make a release the app's active one",
        description="Promotes RELEASE, or the app's latest release when it is omitted.",
    )
    promote.add_argument("release", nargs="?", default="", metavar="RELEASE")
    promote.set_defaults(func=promote_release)


def releases_table(
    releases: Sequence[types.Release], active: str, now: float | None = None
) -> list[str]:
    """The `slipway releases` table."""
    rows = [
        [
            r.id,
            "active" if r.id == active else "",
            r.build,
            humanize_since(r.created, now),
            r.description,
        ]
        for r in releases
    ]
    return table(["ID", "STATUS", "BUILD", "CREATED", "DESCRIPTION"], rows)


def release_info(release: types.Release, now: float | None = None) -> list[str]:
    """The `slipway releases info` key list; `Env` holds one `KEY=VALUE` line per variable."""
    return key_blocks(
        [
            ("Id", [release.id]),
            ("Build", [release.build]),
            ("Created", [humanize_since(release.created, now)]),
            ("Description", [release.description]),
            # A value's own newlines continue in the value column too.
            ("Env", [part for line in env_lines(release.env) for part in line.split("\n")]),
        ]
    )


def promote(metadata: MetadataClient, console: Console, app: str, release_id: str = "") -> str:
    """Promotes the release (the app's latest when empty), then says so; returns its id."""
    promoted = metadata.promote_release(app, release_id).release
    write_line(console, f"Promoting {promoted}... OK")
    return promoted


def list_releases(ctx: Context, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise InvalidArgument(f"--limit must be at least 1, not {args.limit}")
    app = ctx.app()
    metadata = ctx.rack().metadata
    releases = metadata.list_releases(app, args.limit)
    active = metadata.get_app(app).release
    if args.json:
        emit(ctx.out, [release_json(r, active) for r in releases])
        return 0
    for line in releases_table(releases, active):
        write_line(ctx.out, line)
    return 0


def show_release(ctx: Context, args: argparse.Namespace) -> int:
    metadata = ctx.rack().metadata
    app = ctx.app()
    release = metadata.get_release(args.release, app)
    if args.json:
        emit(ctx.out, release_json(release, metadata.get_app(app).release))
        return 0
    for line in release_info(release):
        write_line(ctx.out, line)
    return 0


def promote_release(ctx: Context, args: argparse.Namespace) -> int:
    promote(ctx.rack().metadata, ctx.status, ctx.app(), args.release)
    return 0
