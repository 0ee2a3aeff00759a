"""`slipway builds import-image IMAGE`: relays existing images into a new build of the app.

The manifest is read here, from `-m FILE` (default: `convox.yml` when the current folder
has one), and sent to the rack as text: each of its services takes its own `image:`, else
IMAGE. Without a manifest the build has one service, `web`, of IMAGE."""

from __future__ import annotations

import argparse
from pathlib import Path

from client.cli.commands import Context, require_app
from client.cli.render import layered, write_line
from client.kernel.context import DEFAULT_MANIFEST
from client.kernel.errors import InvalidArgument

LABEL = "Importing image"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Adds `import-image` to the `builds` subcommands."""
    p = sub.add_parser(
        "import-image",
        parents=[common],
        help="import an existing image as a new build",
        description="Pulls IMAGE (and the `image:` of every manifest service that has one), "
        "pushes it as each service's image of a new build of the app and records the "
        "build with a release (not promoted). Without a manifest the build has one "
        "service, web.",
    )
    p.add_argument("image", metavar="IMAGE", help="e.g. registry.example.com/team/app:1.2")
    p.add_argument(
        "-m",
        "--manifest",
        metavar="FILE",
        help=f"the manifest (default: {DEFAULT_MANIFEST} when there is one here; "
        "else one service, web)",
    )
    p.add_argument(
        "-d", "--description", help="the build's description (default: import-image IMAGE)"
    )
    p.add_argument(
        "--id",
        action="store_true",
        help="print only the release id on stdout, everything else on stderr",
    )
    p.set_defaults(func=import_image)


def read_manifest(cwd: Path, path: str | None) -> str:
    """The manifest's text: FILE when given (which must exist), else `convox.yml` when
    the folder has one, else empty (one service, `web`)."""
    if path is None:
        default = cwd / DEFAULT_MANIFEST
        return default.read_text(encoding="utf-8", errors="replace") if default.is_file() else ""
    file = cwd / path
    if not file.is_file():
        raise InvalidArgument(f"no such file: {path}")
    return file.read_text(encoding="utf-8", errors="replace")


def import_image(ctx: Context, args: argparse.Namespace) -> int:
    app = ctx.app()
    text = read_manifest(ctx.cwd, args.manifest)
    status = ctx.status_for(args.id)
    rack = ctx.rack()
    require_app(rack, app)  # before anything is pulled
    with layered(status, LABEL) as show:
        build, release = rack.registry.import_image(
            app, args.image, text, args.description or "", show
        )
    console = ctx.err if args.id else ctx.out
    write_line(console, f"Build:   {build.id}")
    write_line(console, f"Release: {release.id}")
    if args.id:
        write_line(ctx.out, release.id)
    return 0
