"""Archive Config: flags over environment over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.archive.config import DEFAULT_GIT_TIMEOUT, DEFAULT_MAX_BYTES, Config


def test_defaults() -> None:
    config = Config.from_env([], {"SLIPWAY_TOKEN": "t"})
    assert config.listen == "127.0.0.1:7401"
    assert config.token == "t"
    assert config.data_dir == Path("~/.local/share/slipway/archive").expanduser()
    assert config.max_bytes == DEFAULT_MAX_BYTES == 2 * 1024**3


def test_environment_and_flags() -> None:
    env = {
        "SLIPWAY_TOKEN": "t",
        "SLIPWAY_LISTEN": "0.0.0.0:9000",
        "SLIPWAY_ARCHIVE_DIR": "/srv/a",
        "SLIPWAY_ARCHIVE_MAX_BYTES": "1000",
    }
    config = Config.from_env([], env)
    assert config.listen == "0.0.0.0:9000"
    assert (config.data_dir, config.max_bytes) == (Path("/srv/a"), 1000)
    config = Config.from_env(["--listen", "127.0.0.1:1", "--data", "/x", "--max-bytes", "5"], env)
    assert (config.listen, config.data_dir, config.max_bytes) == ("127.0.0.1:1", Path("/x"), 5)


def test_missing_token_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        Config.from_env([], {})
    assert exc.value.code == 2
    assert "SLIPWAY_TOKEN is required" in capsys.readouterr().err


def test_bad_max_bytes_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        Config.from_env(["--max-bytes", "lots"], {"SLIPWAY_TOKEN": "t"})
    assert exc.value.code == 2


def test_git_timeout() -> None:
    assert Config.from_env([], {"SLIPWAY_TOKEN": "t"}).git_timeout == DEFAULT_GIT_TIMEOUT == 600
    env = {"SLIPWAY_TOKEN": "t", "SLIPWAY_ARCHIVE_GIT_TIMEOUT": "90"}
    assert Config.from_env([], env).git_timeout == 90
    assert Config.from_env(["--git-timeout", "2.5"], env).git_timeout == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(SystemExit) as exc:
            Config.from_env(["--git-timeout", bad], env)
        assert exc.value.code == 2
