"""`python -m services.archive`: run the archive service until SIGTERM."""

from __future__ import annotations

import logging

from services.archive.config import Config
from services.archive.server import create_server
from services.common.server import configure_logging, serve_until_signalled

log = logging.getLogger("services.archive")


def main() -> int:
    config = Config.from_env()
    configure_logging()
    try:
        server = create_server(config)
    except OSError as err:
        log.error("cannot start: %s", err)
        return 1
    log.info("archive service on %s, data in %s", config.listen, config.data_dir)
    serve_until_signalled(server)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
