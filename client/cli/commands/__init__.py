"""The commands of `slipway`, one module per group; each registers its argparse parsers.

Commands receive a `Context`: the consoles to print on, the environment, and how to reach a
rack, all injected so tests can run every command against a fake rack and string buffers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from client.cli.config import DEFAULT_LOCAL, ClientConfig, RackEntry
from client.kernel.errors import InvalidArgument, NotFound, Unavailable, Unreachable
from client.kernel.types import check_app_name

if TYPE_CHECKING:
    from client.api.rack import Rack

Connect = Callable[[str, str, "bytes | None"], "Rack"]
"""Opens a rack from its front-door address, token and the CA it is verified against
(PEM; None: the system's trusted roots); `Rack.connect` outside tests."""


def _connect(host: str, token: str, ca: bytes | None) -> Rack:
    from client.api.rack import Rack

    return Rack.connect(host, token, ca)


@dataclass
class Context:
    """Everything a command needs from outside itself."""

    out: Console
    err: Console
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    connect: Connect = _connect
    config_path: Path | None = None
    cwd: Path = field(default_factory=Path.cwd)
    sleep: Callable[[float], None] = time.sleep
    app_flag: str | None = None
    rack_flag: str | None = None
    _rack: Rack | None = None

    @property
    def status(self) -> Console:
        """Where progress lines go: stdout on a terminal, stderr when stdout is piped."""
        return self.out if self.out.is_terminal else self.err

    def status_for(self, only_id: bool) -> Console:
        """Where a command's status lines go: stderr with `--id` (stdout holds the id
        alone), else `status`."""
        return self.err if only_id else self.status

    def config(self) -> ClientConfig:
        return ClientConfig.load(self.config_path)

    def rack(self) -> Rack:
        """The rack `-r` (or the configuration) names, connected once."""
        if self._rack is None:
            self._rack = self.open_rack(self.config().resolve(self.rack_flag))
        return self._rack

    def open_rack(self, entry: RackEntry) -> Rack:
        """Connects to the rack `entry` names; a local rack that does not answer says how
        to start it (a remote one is not this machine's to start)."""
        try:
            return self.connect(entry.host, entry.token, entry.ca_pem)
        except Unreachable as err:
            if not entry.local or err.what != "rack":
                raise
            start = "slipway rack start" + (
                "" if entry.name == DEFAULT_LOCAL else f" --name {entry.name}"
            )
            raise Unavailable(f"{err} (is the rack running? start it with: {start})") from None

    def app(self, folder: str | os.PathLike[str] | None = None) -> str:
        """`-a NAME`, else the name of `folder` (default: the current folder)."""
        if self.app_flag:
            return check_app_name(self.app_flag)
        base = self.cwd / folder if folder is not None else self.cwd
        name = base.resolve().name
        try:
            return check_app_name(name)
        except InvalidArgument as err:
            raise InvalidArgument(f"{err}; it comes from the folder name, pass -a NAME") from None

    def target(self, app: str) -> str:
        """The `-a`/`-r` flags naming this app and rack in a suggested command."""
        return f"-a {app}" + (f" -r {self.rack_flag}" if self.rack_flag else "")


def require_app(rack: Rack, app: str) -> None:
    """NotFound, with how to create it, unless `app` exists on `rack`: checked before
    anything is packed, read or moved (nothing creates an app implicitly)."""
    try:
        rack.metadata.get_app(app)
    except NotFound:
        raise NotFound.no_app(app) from None
