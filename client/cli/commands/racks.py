"""Racks: `rack` (show, start, stop, status, add-builder, registry, gc), `racks`, `login`,
`switch`."""

from __future__ import annotations

import argparse
from pathlib import Path

from client.cli.commands import Context
from client.cli.config import DEFAULT_LOCAL, RackEntry, config_file, read_ca
from client.cli.jsonout import emit
from client.cli.render import key_values, step, table, write_line
from client.kernel.errors import InvalidArgument, NotFound, Unauthenticated
from client.kernel.types import ENGINE_BUILDERS, parse_duration

DEFAULT_PORT = 7400
# Where the token `login --token` takes is, said where a token is asked for or refused.
TOKEN_FILE = (
    "the file 'slipway rack' shows as Token on the rack's machine, by default "
    "~/.local/share/slipway/racks/local/token"
)


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    rack = commands.add_parser(
        "rack",
        parents=[common],
        help="show or manage a rack",
        description="Shows the current rack: its address, the registry its images are "
        "pulled from (docker pull), and where its token is.",
    )
    rack.add_argument("--json", action="store_true", help="print one JSON object")
    rack.set_defaults(func=show_rack)
    sub = rack.add_subparsers(dest="rack_command", metavar="COMMAND")

    start = sub.add_parser("start", parents=[common], help="start a local rack in the background")
    start.add_argument("--name", help=f"the rack's name (default {DEFAULT_LOCAL})")
    start.add_argument(
        "--port",
        type=int,
        metavar="BASE",
        help=f"the first of the ports its parts listen on (default {DEFAULT_PORT}, or the "
        "rack's own when it ran before)",
    )
    start.add_argument("--data", metavar="DIR", help="where it keeps its data")
    start.add_argument(
        "--engine-builder",
        choices=ENGINE_BUILDERS,
        help="the engine's builder: buildkit (default), or legacy for engines without it",
    )
    start.add_argument(
        "--builders",
        type=int,
        metavar="N",
        help="run N builder processes sharing the rack's queue (default 1, or as many as ran)",
    )
    start.add_argument(
        "--database",
        metavar="URL",
        help="keep the metadata in PostgreSQL, postgresql://USER@HOST:PORT/DB "
        "(default SQLite in the data folder)",
    )
    start.add_argument(
        "--archives",
        metavar="URL",
        help="keep source archives in S3, s3://BUCKET[/PREFIX], with the usual AWS "
        "environment (default the data folder)",
    )
    start.add_argument(
        "--listen",
        metavar="ADDR",
        help="the address its parts listen on (default 127.0.0.1; 0.0.0.0 for all, "
        "with --advertise)",
    )
    start.add_argument(
        "--advertise",
        metavar="HOST",
        help="the name or address other machines reach it at, announced to clients and "
        "other racks and put in its certificates (default: the listen address)",
    )
    start.add_argument(
        "--registry",
        metavar="URL",
        help="push images to Amazon ECR, ecr://ACCOUNT.dkr.ecr.REGION.amazonaws.com, with "
        "the usual AWS environment (default: the rack's own registry)",
    )
    start.set_defaults(func=start_rack)

    add = sub.add_parser(
        "add-builder",
        parents=[common],
        help="start one more builder for a running local rack",
        description="Starts one more builder process sharing the rack's queue, on the "
        "rack's Docker engine or on ENGINE (a DOCKER_HOST such as tcp://HOST:2376).",
    )
    add.add_argument("--name", help="the rack (default: the current local one)")
    add.add_argument("--engine", metavar="DOCKER_HOST", help="the Docker engine it builds with")
    add.set_defaults(func=add_builder)

    stop = sub.add_parser("stop", parents=[common], help="stop a local rack")
    stop.add_argument("--name", help="the rack (default: the current local one)")
    stop.set_defaults(func=stop_rack)

    status = sub.add_parser("status", parents=[common], help="report each part of a local rack")
    status.add_argument("--name", help="the rack (default: the current local one)")
    status.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON list"
    )
    status.set_defaults(func=rack_status)

    registry = sub.add_parser(
        "registry",
        parents=[common],
        help="show the address and credentials of a local rack's registry",
        description="Prints the Address and Username of the rack registry, for "
        "'docker login'; --password prints the password alone, for --password-stdin.",
    )
    registry.add_argument("--name", help="the rack (default: the current local one)")
    registry.add_argument("--password", action="store_true", help="print the password alone")
    registry.set_defaults(func=rack_registry)

    gc = sub.add_parser(
        "gc",
        parents=[common],
        help="remove source archives and blobs no build needs",
        description="Removes the rack's source archives no build names, and the file "
        "contents no kept archive names, once older than the grace period (default: the "
        "rack's, a day). The rack also does this by itself, at most once a day.",
    )
    gc.add_argument(
        "--grace", help="keep what is younger than this (e.g. 1h, 30m, 0s; default a day)"
    )
    gc.set_defaults(func=rack_gc)

    racks = commands.add_parser("racks", parents=[common], help="list the configured racks")
    racks.add_argument("--json", action="store_true", help="print one JSON list")
    racks.set_defaults(func=list_racks)

    login = commands.add_parser(
        "login",
        parents=[common],
        help="add a remote rack",
        description="Checks that the rack at ADDRESS answers over TLS, its certificate "
        "verified against --ca, and accepts the token; records it and makes it current.",
    )
    login.add_argument("address", metavar="ADDRESS", help="the rack's front door, host:port")
    login.add_argument("--name", help="what to call it (default: the host)")
    login.add_argument(
        "--token", help=f"the rack's token: the contents of {TOKEN_FILE} (default: $SLIPWAY_TOKEN)"
    )
    login.add_argument(
        "--ca",
        metavar="FILE",
        help="the rack's certificate authority, a PEM file (the rack writes it to "
        "<data>/tls/ca.pem); default: the system's trusted roots",
    )
    login.set_defaults(func=login_rack)

    switch = commands.add_parser("switch", parents=[common], help="make a rack current")
    switch.add_argument("name", metavar="NAME")
    switch.set_defaults(func=switch_rack)


def _local_name(ctx: Context, args: argparse.Namespace) -> str:
    """`--name`, else `-r`, else the current rack when it is local, else `local`."""
    if args.name or ctx.rack_flag:
        return str(args.name or ctx.rack_flag)
    config = ctx.config()
    current = config.racks.get(config.current)
    return current.name if current is not None and current.local else DEFAULT_LOCAL


def show_rack(ctx: Context, args: argparse.Namespace) -> int:
    entry = ctx.config().resolve(ctx.rack_flag)
    registry, token_file = _registry_and_token(ctx, entry)
    if getattr(args, "json", False):
        emit(
            ctx.out,
            {
                "name": entry.name,
                "host": entry.host,
                "local": bool(entry.local),
                "registry": registry,
                "token_file": token_file,
            },
        )
        return 0
    pairs = [
        ("Name", entry.name),
        ("Host", entry.host),
        ("Registry", registry),
        ("Token", token_file or "$SLIPWAY_TOKEN"),
    ]
    for line in key_values(pairs):
        ctx.out.print(line)
    return 0


def _registry_and_token(ctx: Context, entry: RackEntry) -> tuple[str, str | None]:
    """The registry host `docker pull` names for the rack's images, and the file its token
    is in: a local rack's own (`<data>/token`, for 'slipway login --token' elsewhere), the
    client configuration for a remote one; None when $SLIPWAY_TOKEN gives it. A remote
    rack is asked for its registry."""
    if entry.local:
        from client.cli.localrack.layout import Layout

        layout = Layout.of(entry)
        registry, token_file = layout.registry_host, str(layout.token_file)
    else:
        registry, token_file = ctx.rack().info.registry_host, str(config_file(ctx.config_path))
    return registry, None if "SLIPWAY_TOKEN" in ctx.env else token_file


def rack_gc(ctx: Context, args: argparse.Namespace) -> int:
    grace = None
    if args.grace is not None:
        grace = 0.0 if args.grace.strip().lower() in ("0", "0s") else parse_duration(args.grace)
    rack = ctx.rack()
    with step(ctx.status, "Collecting garbage"):
        done = rack.builder.collect_garbage(grace)
    write_line(
        ctx.out,
        f"Removed {done.removed} unused objects ({human_bytes(done.removed_bytes)}); "
        f"kept {done.kept} ({human_bytes(done.kept_bytes)})",
    )
    return 0


def human_bytes(count: int) -> str:
    """`532 B`, `4.2 KiB`, `1.0 GiB`."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def list_racks(ctx: Context, args: argparse.Namespace) -> int:
    config = ctx.config()
    current = ctx.env.get("SLIPWAY_RACK") or config.current
    if args.json:
        emit(
            ctx.out,
            [
                {"name": name, "host": e.host, "current": name == current, "local": bool(e.local)}
                for name, e in sorted(config.racks.items())
            ],
        )
        return 0
    rows = [
        [name, entry.host, "*" if name == current else ""]
        for name, entry in sorted(config.racks.items())
    ]
    for line in table(["NAME", "HOST", "CURRENT"], rows):
        ctx.out.print(line)
    return 0


def start_rack(ctx: Context, args: argparse.Namespace) -> int:
    from client.cli.localrack.rack import start_rack as start

    data = Path(args.data).expanduser().resolve() if args.data else None
    start(
        args.name or ctx.rack_flag or DEFAULT_LOCAL,
        args.port,
        data,
        ctx.status,
        engine_builder=args.engine_builder,
        builders=args.builders,
        database=args.database,
        archives=args.archives,
        listen=args.listen,
        advertise=args.advertise,
        registry=args.registry,
    )
    return 0


def add_builder(ctx: Context, args: argparse.Namespace) -> int:
    from client.cli.localrack.rack import add_builder as add

    slot = add(_local_name(ctx, args), args.engine, ctx.status)
    ctx.out.print(f"Started {slot.id} at {slot.address}")
    return 0


def stop_rack(ctx: Context, args: argparse.Namespace) -> int:
    from client.cli.localrack.rack import stop_rack as stop

    stop(_local_name(ctx, args), ctx.status)
    return 0


def rack_status(ctx: Context, args: argparse.Namespace) -> int:
    from client.cli.localrack.rack import rack_status as status

    rows = [list(row) for row in status(_local_name(ctx, args))]
    if getattr(args, "json", False):
        emit(ctx.out, [{"part": p, "state": s, "detail": d} for p, s, d in rows])
        return 0
    for line in table(["PART", "STATE", "DETAIL"], rows):
        ctx.out.print(line)
    return 0


def rack_registry(ctx: Context, args: argparse.Namespace) -> int:
    from client.cli.localrack.rack import registry_login

    login = registry_login(_local_name(ctx, args))
    if args.password:
        write_line(ctx.out, login.password)
        return 0
    for line in key_values([("Address", login.address), ("Username", login.username)]):
        ctx.out.print(line)
    return 0


def _host_of(address: str) -> str:
    """`host` of `host:port` (IPv6 brackets dropped)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        host = address
    return host.strip("[]")


def login_rack(ctx: Context, args: argparse.Namespace) -> int:
    address = args.address.strip()
    if not address or "/" in address:
        raise InvalidArgument(f"invalid rack address: {args.address!r} (want host:port)")
    token = args.token if args.token is not None else ctx.env.get("SLIPWAY_TOKEN", "")
    name = args.name or _host_of(address)
    ca = read_ca(args.ca) if args.ca else ""
    try:
        with step(ctx.status, f"Authenticating with {address}"):
            ctx.connect(address, token, ca.encode() if ca else None)
    except Unauthenticated:
        why = "the rack refused the token" if token else "no token given"
        raise Unauthenticated(
            f"unauthorized: {why} (--token wants the contents of {TOKEN_FILE})"
        ) from None
    config = ctx.config()
    config.add(RackEntry(name=name, host=address, token=token, ca=ca), make_current=True)
    config.save(ctx.config_path)
    ctx.status.print(f"Switched to {name}")
    return 0


def switch_rack(ctx: Context, args: argparse.Namespace) -> int:
    config = ctx.config()
    if args.name not in config.racks:
        raise NotFound(f"rack not found: {args.name} (see 'slipway racks')")
    config.current = args.name
    config.save(ctx.config_path)
    ctx.status.print(f"Switched to {args.name}")
    return 0
