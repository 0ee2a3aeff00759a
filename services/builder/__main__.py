"""`python -m services.builder`: serve until SIGTERM or SIGINT."""

from __future__ import annotations

from services.builder.config import Config
from services.builder.server import create_server
from services.common.server import Server, run_service


def main(argv: list[str] | None = None) -> int:
    config = Config.from_env(argv)

    def create() -> Server:
        config.scratch_dir.mkdir(parents=True, exist_ok=True)
        return create_server(config)

    return run_service(
        "builder",
        create,
        lambda server: f"builder of rack {config.rack_name} on {server.address}",
    )


if __name__ == "__main__":
    raise SystemExit(main())
