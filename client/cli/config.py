"""The client configuration: which racks the user knows and which is current.

Stored as JSON in `$XDG_CONFIG_HOME/slipway/config.json` (by default
`~/.config/slipway/config.json`), mode 0600 because it holds tokens. `SLIPWAY_RACK`,
`SLIPWAY_HOST`, `SLIPWAY_TOKEN` and `SLIPWAY_CA` (a PEM file) override what it says.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from client.kernel.errors import InvalidArgument, NotFound
from client.kernel.types import MAX_CA_BYTES, ca_problem

#: The name `slipway rack start` gives a local rack unless told another.
DEFAULT_LOCAL = "local"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "slipway"


def config_file(path: Path | None = None) -> Path:
    """The configuration file: `path`, else `config.json` in `config_dir()`."""
    return path or config_dir() / "config.json"


@dataclass(frozen=True)
class RackEntry:
    """One rack the client knows: where its front door is and its token.

    `local` holds what `slipway rack start` needs to manage a rack on this machine
    (`port`, `data`); it is empty for a remote rack added by `slipway login`. `ca` is the
    PEM of the certificate authority the rack's certificates are verified against (empty:
    the system's trusted roots)."""

    name: str
    host: str
    token: str
    local: dict[str, Any] = field(default_factory=dict)
    ca: str = field(default="", repr=False)

    @property
    def ca_pem(self) -> bytes | None:
        return self.ca.encode() if self.ca else None


@dataclass
class ClientConfig:
    """Every known rack and the current one."""

    racks: dict[str, RackEntry] = field(default_factory=dict)
    current: str = ""

    @classmethod
    def load(cls, path: Path | None = None) -> ClientConfig:
        path = config_file(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as err:
            raise InvalidArgument(f"cannot read client configuration {path}: {err}") from None
        racks = {
            name: RackEntry(
                name=name,
                host=r["host"],
                token=r.get("token", ""),
                local=r.get("local", {}),
                ca=r.get("ca", ""),
            )
            for name, r in (raw.get("racks") or {}).items()
        }
        return cls(racks=racks, current=raw.get("current", ""))

    def save(self, path: Path | None = None) -> None:
        """Writes atomically, readable by the user alone."""
        path = config_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "current": self.current,
            "racks": {
                n: {k: v for k, v in asdict(r).items() if k != "name"}
                for n, r in self.racks.items()
            },
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-")
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def add(self, entry: RackEntry, make_current: bool = True) -> None:
        self.racks[entry.name] = entry
        if make_current or not self.current:
            self.current = entry.name

    def resolve(self, name: str | None = None) -> RackEntry:
        """The rack to talk to: `-r NAME`, else `SLIPWAY_RACK`, else the current one;
        `SLIPWAY_HOST`, `SLIPWAY_TOKEN` and `SLIPWAY_CA` override its address, token and
        CA."""
        env_host = os.environ.get("SLIPWAY_HOST", "")
        env_token = os.environ.get("SLIPWAY_TOKEN")
        env_ca = (
            read_ca(os.environ["SLIPWAY_CA"], "SLIPWAY_CA") if os.environ.get("SLIPWAY_CA") else ""
        )
        wanted = name or os.environ.get("SLIPWAY_RACK", "") or self.current
        if wanted:
            entry = self.racks.get(wanted)
            if entry is None:
                if env_host and not name:
                    return RackEntry(wanted, env_host, env_token or "", ca=env_ca)
                raise NotFound(f"rack not found: {wanted} (see 'slipway racks')")
        elif env_host:
            entry = RackEntry(name="env", host=env_host, token=env_token or "", ca=env_ca)
        else:
            raise NotFound("no current rack: run 'slipway rack start' or 'slipway login ADDRESS'")
        if env_host or env_token is not None or env_ca:
            entry = RackEntry(
                name=entry.name,
                host=env_host or entry.host,
                token=entry.token if env_token is None else env_token,
                local=entry.local,
                ca=env_ca or entry.ca,
            )
        return entry


def read_ca(path: str, what: str = "--ca") -> str:
    """The PEM certificates in the file at `path`, checked to be some; InvalidArgument
    naming `what` otherwise (its content is never shown)."""
    try:
        with open(path, "rb") as pem:
            data = pem.read(MAX_CA_BYTES + 1)
    except OSError as err:
        raise InvalidArgument(f"cannot read {what} {path[:200]}: {err.strerror}") from None
    problem = ca_problem(data)
    if problem:
        raise InvalidArgument(f"{what} {path[:200]} {problem}")
    return data.decode("ascii")
