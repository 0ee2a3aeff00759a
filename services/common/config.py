"""What every service's configuration shares: the `--listen` flag, the rack token and the
shape of a registry host."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping

# `host`, `host:port` or `[v6]:port`, as image references name a registry: no scheme, no path.
REGISTRY_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?\Z")


def valid_registry_host(host: str) -> bool:
    """Whether `host` names a registry as image references do (`host[:port]`)."""
    return bool(REGISTRY_HOST.match(host))


class ServiceArgs(argparse.ArgumentParser):
    """A service's flag parser: `--listen` (SLIPWAY_LISTEN) is there from the start, and
    `token()` reads SLIPWAY_TOKEN. Errors exit 2 with argparse's usage message."""

    def __init__(self, service: str, default_listen: str, env: Mapping[str, str]) -> None:
        super().__init__(
            prog=f"python -m services.{service}", description=f"Slipway {service} service."
        )
        self.env = env
        self.add_argument(
            "--listen",
            default=env.get("SLIPWAY_LISTEN") or default_listen,
            help=f"host:port to listen on (SLIPWAY_LISTEN, default {default_listen})",
        )

    def token(self) -> str:
        """The rack token every call but health must carry; exits 2 when it is not set."""
        token = self.env.get("SLIPWAY_TOKEN", "")
        if not token:
            self.error("SLIPWAY_TOKEN is required: set it to the rack token")
        return token
