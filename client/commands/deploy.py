"""`slipway deploy [DIR]`: `slipway build`, then promote the release it made.

The build is the build command itself (its flags, output and exit status); deploy only
watches which build it starts, so it can promote that build's release and no other, even
when other builds of the app run at the same time.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from typing import Any

from client import types
from client.commands import Context, build
from client.commands.releases import promote
from client.errors import SlipwayError


class _Renamed:
    """Hands `build.register` a subparsers object that names its parser `deploy`, so deploy
    has exactly the build command's flags."""

    def __init__(self, commands: argparse._SubParsersAction) -> None:
        self._commands = commands

    def add_parser(self, _name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.update(
            help="build the app from a folder and promote the release",
            description="Runs `slipway build` (same flags, same output), then promotes the "
            "new release. A build that does not complete promotes nothing.",
        )
        return self._commands.add_parser("deploy", **kwargs)


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    renamed = _Renamed(commands)
    build.register(renamed, common)  # type: ignore[arg-type]
    commands.choices["deploy"].set_defaults(func=run)


class _Watched:
    """A builder client that remembers the builds it starts; everything else passes through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.started: list[types.Build] = []

    def start_build(self, request: types.BuildRequest) -> types.Build:
        started = self._inner.start_build(request)
        self.started.append(started)
        return started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def run(ctx: Context, args: argparse.Namespace) -> int:
    watched: list[_Watched] = []

    def connect(host: str, token: str) -> Any:
        rack: Any = copy.copy(ctx.connect(host, token))
        watched.append(_Watched(rack.builder))
        rack.builder = watched[-1]
        return rack

    build_ctx = dataclasses.replace(ctx, connect=connect)
    code = build.run(build_ctx, args)
    if code != 0:
        return code
    started = [b for w in watched for b in w.started]
    if len(started) != 1:
        raise SlipwayError(f"deploy expected one build to start, saw {len(started)}")
    rack = build_ctx.rack()
    finished = rack.metadata.get_build(started[0].id, started[0].app)
    if not finished.release:
        raise SlipwayError(f"build {finished.id} made no release to promote")
    promote(rack.metadata, ctx.err if args.id else ctx.out, finished.app, finished.release)
    return 0
