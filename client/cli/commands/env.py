"""`slipway env`: show the app's environment; `env set` and `env unset` change it.

Each change is one new release made by the metadata service on top of the latest release, in
one transaction (UpdateEnv), so two people changing the environment at once both keep their
change.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence

from client.cli.commands import Context
from client.cli.commands.releases import promote
from client.cli.jsonout import emit
from client.cli.render import step, write_line
from client.kernel.environment import check_env_name, env_lines, parse_assignments


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "env",
        parents=[common],
        help="show and change the app's environment",
        description="Prints the app's environment (that of its latest release) as KEY=VALUE "
        "lines, sorted by key.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object of KEY: VALUE")
    p.set_defaults(func=show_env)
    sub = p.add_subparsers(dest="env_command", metavar="COMMAND")

    set_ = sub.add_parser(
        "set",
        parents=[common],
        help="set variables, making one new release",
        description="Makes one release whose environment is the latest release's with each "
        "KEY set to VALUE (VALUE is everything after the first `=`, and may be empty).",
    )
    set_.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    set_.add_argument("--promote", action="store_true", help="promote the new release")
    set_.set_defaults(func=set_env)

    unset = sub.add_parser(
        "unset",
        parents=[common],
        help="remove variables, making one new release",
        description="Makes one release whose environment is the latest release's without "
        "each KEY; every KEY must be set.",
    )
    unset.add_argument("keys", nargs="+", metavar="KEY")
    unset.add_argument("--promote", action="store_true", help="promote the new release")
    unset.set_defaults(func=unset_env)


def show_env(ctx: Context, args: argparse.Namespace) -> int:
    latest = ctx.rack().metadata.list_releases(ctx.app(), 1)
    env = latest[0].env if latest else {}
    if args.json:
        emit(ctx.out, dict(sorted(env.items())))
        return 0
    for line in env_lines(env):
        write_line(ctx.out, line)
    return 0


def set_env(ctx: Context, args: argparse.Namespace) -> int:
    return _update(ctx, parse_assignments(args.assignments), [], args.promote)


def unset_env(ctx: Context, args: argparse.Namespace) -> int:
    return _update(ctx, {}, [check_env_name(key) for key in args.keys], args.promote)


def _update(
    ctx: Context, set_vars: Mapping[str, str], unset: Sequence[str], promote_it: bool
) -> int:
    """Arguments are checked before the rack is contacted: bad input changes nothing."""
    app = ctx.app()
    metadata = ctx.rack().metadata
    with step(ctx.status, "Updating environment"):
        release = metadata.update_env(app, set_vars, unset)
    write_line(ctx.out, f"Release: {release.id}")
    if promote_it:
        promote(metadata, ctx.status, app, release.id)
    return 0
