"""`python -m services.archive`: run the archive service until SIGTERM."""

from __future__ import annotations

from services.archive.config import Config
from services.archive.server import create_server
from services.common.server import run_service


def main() -> int:
    config = Config.from_env()
    return run_service(
        "archive",
        lambda: create_server(config),
        lambda server: (
            f"archive service on {server.address}, archives in "
            f"{config.archive_url or config.data_dir}"
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
