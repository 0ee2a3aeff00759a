"""`python -m services.registry`: run the registry service until SIGTERM."""

from __future__ import annotations

import logging

from services.common.server import configure_logging, serve_until_signalled
from services.registry.config import Config
from services.registry.server import create_server

log = logging.getLogger("services.registry")


def main() -> int:
    config = Config.from_env()
    configure_logging()
    try:
        server = create_server(config)
    except OSError as err:
        log.error("cannot start: %s", err)
        return 1
    log.info(
        "registry service on %s: pushing to %s with the engine at %s",
        config.listen,
        config.registry_host,
        config.docker_host,
    )
    serve_until_signalled(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
