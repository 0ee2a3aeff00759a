"""Metadata Config: flags over environment over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.metadata.config import Config, redact
from tests.tls import tls_env


def test_defaults() -> None:
    config = Config.from_env([], {**tls_env(), "SLIPWAY_TOKEN": "t"})
    data = Path("~/.local/share/slipway/metadata").expanduser()
    assert (config.listen, config.token, config.data_dir) == ("127.0.0.1:7402", "t", data)
    assert config.database_url == f"sqlite:///{data}/metadata.db"


def test_environment_and_flags() -> None:
    env = {
        **tls_env(),
        "SLIPWAY_TOKEN": "t",
        "SLIPWAY_LISTEN": "0.0.0.0:9000",
        "SLIPWAY_DATA": "/srv/md",
    }
    config = Config.from_env([], env)
    assert (config.listen, config.data_dir) == ("0.0.0.0:9000", Path("/srv/md"))
    assert config.database_url == "sqlite:////srv/md/metadata.db"
    pg = "postgresql://slipway@db.internal:5432/rack"
    config = Config.from_env([], {**env, "SLIPWAY_DATABASE_URL": pg})
    assert config.database_url == pg
    config = Config.from_env(
        ["--listen", "127.0.0.1:1", "--data", "/x", "--database", "sqlite:///rel.db"], env
    )
    assert (config.listen, config.data_dir, config.database_url) == (
        "127.0.0.1:1",
        Path("/x"),
        "sqlite:///rel.db",
    )


def test_missing_token_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        Config.from_env([], {})
    assert exc.value.code == 2
    assert "SLIPWAY_TOKEN is required" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["mysql://x@h/db", "postgresql://x@h", "nonsense"])
def test_unusable_database_url_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        Config.from_env(["--database", url], {**tls_env(), "SLIPWAY_TOKEN": "t"})
    assert exc.value.code == 2
    assert "database URL" in capsys.readouterr().err


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
