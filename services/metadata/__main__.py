"""`python -m services.metadata`: run the metadata service until SIGTERM."""

from __future__ import annotations

from services.common.server import run_service
from services.metadata.config import Config, redact
from services.metadata.server import create_server


def main() -> int:
    config = Config.from_env()
    return run_service(
        "metadata",
        lambda: create_server(config),
        lambda server: (
            f"metadata service on {server.address}, database {redact(config.database_url)}"
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
