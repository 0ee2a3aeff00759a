"""`python -m services.registry`: run the registry service until SIGTERM."""

from __future__ import annotations

from services.common.server import run_service
from services.registry.config import Config
from services.registry.server import create_server


def main() -> int:
    config = Config.from_env()
    return run_service(
        "registry",
        lambda: create_server(config),
        lambda server: (
            f"registry service on {server.address}: pushing to "
            f"{config.registry_host} with the engine at {config.docker_host}"
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
