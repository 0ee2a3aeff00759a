"""`slipway apps` and its subcommands: list, create, info, delete (SPEC §3 Apps).

Nothing creates an app but `apps create`: building, deploying, importing, copying into or
setting env on an unknown app fails with the hint to create it."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from client.cli.commands import Context
from client.cli.jsonout import app_json, emit
from client.cli.render import app_status, humanize_since, key_values, table, write_line
from client.kernel import types
from client.kernel.errors import InvalidArgument
from client.kernel.types import check_app_name


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "apps",
        parents=[common],
        help="list, create, show and delete apps",
        description="Lists the rack's apps (NAME  STATUS  RELEASE). STATUS is `running` for "
        "an app with a promoted release, `new` for one without.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=list_apps)
    sub = p.add_subparsers(dest="apps_command", metavar="COMMAND")

    create = sub.add_parser("create", parents=[common], help="create an app")
    create.add_argument("name", metavar="NAME")
    create.set_defaults(func=create_app)

    info = sub.add_parser("info", parents=[common], help="show an app")
    info.add_argument("name", nargs="?", default=None, metavar="NAME")
    info.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object"
    )
    info.set_defaults(func=show_app)

    delete = sub.add_parser(
        "delete",
        parents=[common],
        help="delete an app with its builds, releases and logs",
        description="Deletes NAME with its builds, releases and logs (their source archives "
        "go with the rack's next garbage collection). Refused while one of its builds is "
        "queued or running.",
    )
    delete.add_argument("name", metavar="NAME")
    delete.set_defaults(func=delete_app)


def apps_table(apps: Sequence[types.App]) -> list[str]:
    rows = [[a.name, app_status(a), a.release] for a in apps]
    return table(["NAME", "STATUS", "RELEASE"], rows)


def list_apps(ctx: Context, args: argparse.Namespace) -> int:
    apps = ctx.rack().metadata.list_apps()
    if args.json:
        emit(ctx.out, [app_json(a) for a in apps])
        return 0
    for line in apps_table(apps):
        write_line(ctx.out, line)
    return 0


def _name(ctx: Context, name: str | None) -> str:
    if name is None:
        return ctx.app()
    if ctx.app_flag and ctx.app_flag != name:
        raise InvalidArgument(f"two apps named: {name} and -a {ctx.app_flag}")
    return check_app_name(name)


def create_app(ctx: Context, args: argparse.Namespace) -> int:
    app = ctx.rack().metadata.create_app(_name(ctx, args.name))
    write_line(ctx.status, f"Creating {app.name}... OK")
    return 0


def show_app(ctx: Context, args: argparse.Namespace) -> int:
    app = ctx.rack().metadata.get_app(_name(ctx, args.name))
    if args.json:
        emit(ctx.out, app_json(app))
        return 0
    pairs = [
        ("Name", app.name),
        ("Status", app_status(app)),
        ("Release", app.release),
        ("Created", humanize_since(app.created) if app.created else ""),
    ]
    for line in key_values(pairs):
        write_line(ctx.out, line)
    return 0


def delete_app(ctx: Context, args: argparse.Namespace) -> int:
    app = ctx.rack().metadata.delete_app(_name(ctx, args.name))
    write_line(ctx.status, f"Deleting {app.name}... OK")
    return 0
