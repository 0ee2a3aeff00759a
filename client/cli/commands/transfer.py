"""`slipway builds export` and `slipway builds import`: a build as a gzip'd tar, streamed
between a rack and a file or pipe in 512 KiB chunks, so memory stays flat at any size."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, BinaryIO

from rich.console import Console

from client.cli.commands import Context, require_app
from client.cli.render import metered, write_line
from client.kernel.errors import InvalidArgument
from client.kernel.streams import iter_chunks

if TYPE_CHECKING:
    from client.api.rack import Rack

TERMINAL_OUT = "pipe this command into a file or specify --file"
TERMINAL_IN = "pipe an exported build into this command or specify --file"
# Two chunks: pipe-max-size, Linux's limit for anyone, is 1 MiB by default.
PIPE_SIZE = 1024 * 1024


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Adds `export` and `import` to the `builds` subcommands."""
    export = sub.add_parser(
        "export",
        parents=[common],
        help="export a build to a file or stdout",
        description="Writes a complete build (its record, log and images) as a gzip'd tar "
        "to FILE or stdout, for `slipway builds import`.",
    )
    export.add_argument("build", metavar="BUILD")
    export.add_argument(
        "-f", "--file", metavar="FILE", help="write to FILE (default: stdout, not a terminal)"
    )
    export.set_defaults(func=export_build)

    imp = sub.add_parser(
        "import",
        parents=[common],
        help="import an exported build",
        description="Reads an exported build from FILE or stdin, pushes its images and "
        "records it as a new build of the app, with a release (not promoted).",
    )
    imp.add_argument("-f", "--file", metavar="FILE", help="read FILE (default: stdin)")
    imp.add_argument("--id", action="store_true", help="print only the release id on stdout")
    imp.set_defaults(func=import_build)


def export_build(ctx: Context, args: argparse.Namespace) -> int:
    app = ctx.app()
    if args.file:
        return _export_to_file(ctx, app, args.build, args.file)
    if ctx.out.is_terminal:
        raise InvalidArgument(TERMINAL_OUT)
    out = _binary(ctx.out.file)
    _widen_pipe(out)
    rack = ctx.rack()
    with metered(ctx.err, "Exporting build") as meter:
        _copy(rack.registry.export_build(app, args.build), out, meter.advance)
    return 0


def _export_to_file(ctx: Context, app: str, build: str, path: str) -> int:
    """Writes beside `path` and renames on success: a partial export is never left to be
    imported later, and a file already at `path` survives a failed export."""
    rack = ctx.rack()
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, partial = tempfile.mkstemp(dir=folder, prefix=".slipway-export-")
    except OSError as err:
        raise InvalidArgument(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with metered(ctx.status, "Exporting build") as meter, os.fdopen(fd, "wb") as out:
            _copy(rack.registry.export_build(app, build), out, meter.advance)
        os.chmod(partial, 0o644)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    return 0


def import_build(ctx: Context, args: argparse.Namespace) -> int:
    app = ctx.app()
    status = ctx.status_for(args.id)
    rack = ctx.rack()
    require_app(rack, app)  # before anything is read
    if args.file:
        try:
            source = open(args.file, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise InvalidArgument(f"no such file: {args.file}") from None
        except OSError as err:
            raise InvalidArgument(f"cannot read {args.file}: {err.strerror or err}") from None
        with source:
            release = _import(rack, app, source, status)
    else:
        if sys.stdin is None or sys.stdin.isatty():
            raise InvalidArgument(TERMINAL_IN)
        release = _import(rack, app, sys.stdin.buffer, status)
    if args.id:
        write_line(ctx.out, release)
    return 0


def _import(rack: Rack, app: str, source: BinaryIO, status: Console) -> str:
    _widen_pipe(source)
    info = os.fstat(source.fileno())
    total = info.st_size if stat.S_ISREG(info.st_mode) else None
    with metered(status, "Importing build", total) as meter:
        chunks = _counted(iter_chunks(source), meter.advance)
        _build, release = rack.registry.import_build(app, chunks)
        meter.result = f", {release.id}"
    return release.id


def _copy(chunks: Iterable[bytes], out: BinaryIO, advance: Callable[[int], None]) -> None:
    for data in chunks:
        out.write(data)
        advance(len(data))
    out.flush()


def _counted(chunks: Iterable[bytes], advance: Callable[[int], None]) -> Iterator[bytes]:
    for data in chunks:
        advance(len(data))
        yield data


def _widen_pipe(stream: BinaryIO) -> None:
    """Lets a pipe hold a whole chunk (Linux: 64 KiB by default), so that `export | import`
    moves each 512 KiB chunk in one write and one read instead of eight of each."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
        if set_size is not None and stat.S_ISFIFO(os.fstat(stream.fileno()).st_mode):
            fcntl.fcntl(stream.fileno(), set_size, PIPE_SIZE)


def _binary(stream: object) -> BinaryIO:
    """The byte stream under a text stream such as sys.stdout."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        raise InvalidArgument("stdout cannot carry bytes here: specify --file")
    return buffer  # type: ignore[no-any-return]
