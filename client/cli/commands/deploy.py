"""`slipway deploy [DIR]`: `slipway build` (same flags, same output, same exit status),
then promote the release that build made."""

from __future__ import annotations

import argparse

from client.api.rack import Rack
from client.cli.commands import Context, build
from client.cli.commands.releases import promote
from client.kernel import types


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "deploy",
        parents=[common],
        help="build the app from a folder or a git repository and promote the release",
        description="Runs `slipway build` (same flags, same output), then promotes the "
        "new release. A build that does not complete promotes nothing.",
    )
    build.add_flags(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    status = ctx.status_for(args.id)

    def promote_release(rack: Rack, done: types.Build) -> None:
        promote(rack.metadata, status, done.app, done.release)

    return build.execute(ctx, args, then=promote_release)
