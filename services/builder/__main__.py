"""`python -m services.builder`: serve until SIGTERM or SIGINT."""

from __future__ import annotations

import logging

from client.errors import SlipwayError
from services.builder.config import Config
from services.builder.server import create_server
from services.common.server import configure_logging, serve_until_signalled

log = logging.getLogger("services.builder")


def main(argv: list[str] | None = None) -> int:
    config = Config.from_env(argv)
    configure_logging()
    try:
        config.scratch_dir.mkdir(parents=True, exist_ok=True)
        server = create_server(config)
    except (SlipwayError, OSError) as err:
        log.error("cannot start: %s", err)
        return 1
    log.info("builder of rack %s on %s", config.rack_name, server.address)
    serve_until_signalled(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
