"""`slipway builds` and its subcommands: list, info, logs, cancel."""

from __future__ import annotations

import argparse

from client.cli.commands import Context, copy, importimage, transfer
from client.cli.commands.follow import follow_build
from client.cli.jsonout import build_json, emit, images_of
from client.cli.render import build_info, builds_table, write_line
from client.kernel.errors import FailedPrecondition, InvalidArgument


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "builds",
        parents=[common],
        help="list and manage builds",
        description="Lists the app's builds, newest first.",
    )
    p.add_argument(
        "--limit", type=int, default=10, metavar="N", help="how many builds to list (default 10)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=list_builds)
    sub = p.add_subparsers(dest="builds_command", metavar="COMMAND")

    info = sub.add_parser("info", parents=[common], help="show a build and its images")
    info.add_argument("build", metavar="BUILD")
    info.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
    )
    info.set_defaults(func=show_build)

    logs = sub.add_parser(
        "logs",
        parents=[common],
        help="print a build's log",
        description="Prints the stored log; follows a running build "
        "until it ends unless --no-follow.",
    )
    logs.add_argument("build", metavar="BUILD")
    logs.add_argument(
        "--follow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="follow a running build until it ends (default)",
    )
    logs.set_defaults(func=build_logs)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a created or running build")
    cancel.add_argument("build", metavar="BUILD")
    cancel.set_defaults(func=cancel_build)
    transfer.register(sub, common)
    importimage.register(sub, common)
    copy.register(sub, common)


def list_builds(ctx: Context, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise InvalidArgument(f"--limit must be at least 1, not {args.limit}")
    app = ctx.app()
    rack = ctx.rack()
    builds = rack.metadata.list_builds(app, args.limit)
    if args.json:
        emit(ctx.out, [build_json(b, rack.info.registry_host) for b in builds])
        return 0
    for line in builds_table(builds):
        ctx.out.print(line)
    return 0


def show_build(ctx: Context, args: argparse.Namespace) -> int:
    rack = ctx.rack()
    build = rack.metadata.get_build(args.build, ctx.app())
    if args.json:
        emit(ctx.out, build_json(build, rack.info.registry_host))
        return 0
    for line in build_info(build):
        ctx.out.print(line)
    images = images_of(build, rack.info.registry_host)
    if images:
        width = max(len(s) for s in images)
        ctx.out.print("Images")
        for service, ref in sorted(images.items()):
            ctx.out.print(f"  {service.ljust(width)}  {ref}")
    return 0


def build_logs(ctx: Context, args: argparse.Namespace) -> int:
    app = ctx.app()
    rack = ctx.rack()
    build = rack.metadata.get_build(args.build, app)
    try:
        if args.follow and not build.terminal:
            follow_build(rack.builder, build.id, ctx.out, ctx.err, sleep=ctx.sleep)
        else:
            for line in rack.metadata.stream_logs(build.id):
                write_line(ctx.out, line.text)
    except KeyboardInterrupt:
        return 130
    return 0


def cancel_build(ctx: Context, args: argparse.Namespace) -> int:
    app = ctx.app()
    try:
        ctx.rack().builder.cancel_build(args.build, app)
    except FailedPrecondition as already:  # a terminal build: a no-op that says so
        write_line(ctx.status, str(already))
        return 0
    write_line(ctx.status, "Cancelling build... OK")
    return 0
