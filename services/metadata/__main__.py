"""`python -m services.metadata`: run the metadata service until SIGTERM."""

from __future__ import annotations

import logging

from client.errors import SlipwayError
from services.common.server import configure_logging, serve_until_signalled
from services.metadata.config import Config, redact
from services.metadata.server import create_server

log = logging.getLogger("services.metadata")


def main() -> int:
    config = Config.from_env()
    configure_logging()
    try:
        server = create_server(config)
    except (SlipwayError, OSError) as err:
        log.error("cannot start: %s", err)
        return 1
    host = config.listen.rsplit(":", 1)[0]
    where = redact(config.database_url)
    log.info("metadata service on %s:%d, database %s", host, server.port, where)
    serve_until_signalled(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
