"""The `slipway` command: parses the command line, runs one command, reports its errors.

`main` takes its streams, environment and rack connector as arguments so tests can drive
any command against a fake rack and read what it printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

import grpc

from client.api.grpcerrors import from_rpc_error
from client.cli.commands import (
    Connect,
    Context,
    apps,
    build,
    builds,
    completion,
    deploy,
    env,
    racks,
    releases,
)
from client.cli.render import make_console, silence_stdout
from client.kernel.errors import InvalidArgument, SlipwayError
from client.kernel.memory import keep_freed_chunks

_GLOBALS = {"-a": "app", "--app": "app", "-r": "rack", "--rack": "rack"}


def value_options(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The options of any command of `parser` that take one value (`-d`, `--token`, ...),
    read from the command tree itself, so that none is forgotten."""
    found: set[str] = set()
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its tree there
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in action.choices.values():
                found |= value_options(sub)
        elif action.option_strings and action.nargs is None:
            found.update(action.option_strings)
    return frozenset(found - set(_GLOBALS))


def extract_globals(
    argv: Sequence[str], values: frozenset[str]
) -> tuple[list[str], str | None, str | None]:
    """Lifts `-a/--app NAME` and `-r/--rack NAME` out of `argv`, wherever they stand (the
    last one wins); returns the rest, the app and the rack. `values` are the options that
    take a value (`value_options`): a value such as `-d -a` is never taken for a global
    flag. A flag missing its value is left for argparse to report."""
    rest: list[str] = []
    found: dict[str, str | None] = {"app": None, "rack": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg in _GLOBALS and i + 1 < len(argv):
            found[_GLOBALS[arg]] = argv[i + 1]
            i += 2
            continue
        name, eq, value = arg.partition("=")
        if eq and name in ("--app", "--rack"):
            found[_GLOBALS[name]] = value
        elif len(arg) > 2 and arg[:2] in ("-a", "-r") and not arg.startswith("--"):
            found[_GLOBALS[arg[:2]]] = arg[2:]
        elif arg in values and i + 1 < len(argv):
            # The next word is the option's value whatever it looks like (a token may start
            # with `-`); argparse takes such a value only attached to its option.
            value = argv[i + 1]
            rest.extend([f"{arg}={value}"] if value.startswith("-") else [arg, value])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return rest, found["app"], found["rack"]


def build_parser(out: IO[str], err: IO[str]) -> argparse.ArgumentParser:
    """The whole command tree; help goes to `out`; a usage error prints the usage line on
    `err` and raises InvalidArgument, so it ends as `ERROR: <message>`, status 1 (SPEC §3)."""

    class Parser(argparse.ArgumentParser):
        def _print_message(self, message: str, file: Any = None) -> None:
            if message:
                (out if file is sys.stdout else err).write(message)

        def error(self, message: str) -> NoReturn:
            self.print_usage(err)
            raise InvalidArgument(message)

        def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
            if message:
                err.write(message)
            raise SystemExit(status)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-a",
        "--app",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="the app (default: the name of the current folder)",
    )
    common.add_argument(
        "-r",
        "--rack",
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="the rack (default: the current one)",
    )

    parser = Parser(
        prog="slipway", parents=[common], description="Builds container apps on a Slipway rack."
    )
    parser.add_argument("--version", action="version", version=f"slipway {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    apps.register(commands, common)
    build.register(commands, common)
    builds.register(commands, common)
    racks.register(commands, common)
    releases.register(commands, common)
    env.register(commands, common)
    deploy.register(commands, common)
    completion.register(commands, common)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("slipway")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "dev"


def main(
    argv: Sequence[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
    connect: Connect | None = None,
    config_path: Path | None = None,
    cwd: Path | None = None,
) -> int:
    """Runs one `slipway` command line; returns its exit status. Every error a user may see
    is `ERROR: <message>` on stderr with status 1; no traceback unless SLIPWAY_DEBUG=1. A
    reader that closes stdout early ends the command quietly with status 0."""
    keep_freed_chunks()  # uploads, exports and imports stream chunks: no page faults per chunk
    out_file = stdout if stdout is not None else sys.stdout
    err_file = stderr if stderr is not None else sys.stderr
    env = os.environ if env is None else env
    out, err = make_console(out_file), make_console(err_file)
    debug = env.get("SLIPWAY_DEBUG", "") not in ("", "0")
    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=err_file)
    try:
        parser = build_parser(out_file, err_file)
        rest, app, rack = extract_globals(
            sys.argv[1:] if argv is None else argv, value_options(parser)
        )
        if "_ARGCOMPLETE" in env:  # a completion script asking (slipway completion)
            completion.complete_line(parser)
        args = parser.parse_args(rest)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help()
            return 0
        extra: dict[str, Any] = {"connect": connect} if connect is not None else {}
        ctx = Context(
            out=out,
            err=err,
            env=env,
            config_path=config_path,
            cwd=cwd or Path.cwd(),
            app_flag=app or getattr(args, "app", None),
            rack_flag=rack or getattr(args, "rack", None),
            **extra,
        )
        return int(func(ctx, args))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except SlipwayError as error:
        return _fail(err, str(error), debug)
    except grpc.RpcError as error:  # a call the client library did not wrap
        return _fail(err, str(from_rpc_error(error)), debug)
    except KeyboardInterrupt:
        err.print()
        return 130
    except BrokenPipeError:  # the reader left early (`slipway builds | head -1`): a normal end
        if out_file is sys.stdout:  # keep Python's exit-time flush from failing again
            silence_stdout()
        return 0
    except Exception as error:  # noqa: BLE001 - the user sees one line, never a traceback
        return _fail(err, f"{type(error).__name__}: {error}", debug)


def _fail(err: Any, message: str, debug: bool) -> int:
    if debug:
        err.file.write(traceback.format_exc())
    err.print(f"ERROR: {message}", style="red")
    return 1


if __name__ == "__main__":
    sys.exit(main())
