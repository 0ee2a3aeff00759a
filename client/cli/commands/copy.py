"""`slipway builds copy`: the destination rack fetches a build from the source rack itself,
service to service; only the blobs it lacks travel, and none passes through this machine."""

from __future__ import annotations

import argparse

from rich.filesize import decimal

from client.cli.commands import Context, require_app
from client.cli.render import metered, write_line
from client.kernel import types
from client.kernel.errors import NotFound

LABEL = "Copying build"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Adds `copy` to the `builds` subcommands."""
    p = sub.add_parser(
        "copy",
        parents=[common],
        help="copy a build to another rack",
        description="Has the rack --to copy a complete build of the app (-a) on the rack (-r) "
        "straight from that rack with its token, moving only the layers it lacks, and record "
        "it as a new build of --to-app with a release (not promoted).",
    )
    p.add_argument("build", metavar="BUILD")
    p.add_argument("--to", required=True, metavar="RACK", help="the rack receiving the build")
    p.add_argument(
        "--to-app", metavar="APP", help="the app receiving the build (default: the same app)"
    )
    p.add_argument("--id", action="store_true", help="print only the release id on stdout")
    p.set_defaults(func=copy_build)


def copy_build(ctx: Context, args: argparse.Namespace) -> int:
    app = ctx.app()
    to_app = types.check_app_name(args.to_app) if args.to_app else app
    config = ctx.config()
    source = config.resolve(ctx.rack_flag)
    # The destination is the configured rack of that name as it is: SLIPWAY_HOST and
    # SLIPWAY_TOKEN speak for the source rack alone.
    target = config.racks.get(args.to)
    if target is None:
        raise NotFound(f"rack not found: {args.to} (see 'slipway racks')")
    rack = ctx.open_rack(target)
    require_app(rack, to_app)  # on the destination, before anything moves
    status = ctx.status_for(args.id)
    with metered(status, LABEL) as meter:
        result = rack.registry.copy_build(
            source.host,
            source.token,
            app,
            args.build,
            to_app=to_app,
            source_ca=source.ca_pem,
            source_name=source.name,
            progress=lambda event: meter.update(event.current, event.total or None),
        )
        meter.result = f", {result.release.id}"
    write_line(status, summary(result))
    if args.id:
        write_line(ctx.out, result.release.id)
    return 0


def summary(result: types.CopyResult) -> str:
    """E.g. `moved 2 of 5 blobs (12.3 MB), mounted 1`: blobs are layers and image configs."""
    text = f"moved {result.moved} of {result.blobs} blobs ({decimal(result.bytes)})"
    return text + (f", mounted {result.mounted}" if result.mounted else "")
