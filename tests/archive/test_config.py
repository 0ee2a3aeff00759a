"""Archive Config: flags over environment over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.archive.config import DEFAULT_GIT_TIMEOUT, DEFAULT_MAX_BYTES, Config
from tests.tls import ca, tls_env


def test_defaults() -> None:
    config = Config.from_env([], {**tls_env(), "SLIPWAY_TOKEN": "t"})
    assert config.listen == "127.0.0.1:7401"
    assert config.token == "t"
    assert config.data_dir == Path("~/.local/share/slipway/archive").expanduser()
    assert config.max_bytes == DEFAULT_MAX_BYTES == 2 * 1024**3


def test_environment_and_flags() -> None:
    env = {
        **tls_env(),
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
        Config.from_env(["--max-bytes", "lots"], {**tls_env(), "SLIPWAY_TOKEN": "t"})
    assert exc.value.code == 2


def test_git_timeout() -> None:
    assert (
        Config.from_env([], {**tls_env(), "SLIPWAY_TOKEN": "t"}).git_timeout
        == DEFAULT_GIT_TIMEOUT
        == 600
    )
    env = {**tls_env(), "SLIPWAY_TOKEN": "t", "SLIPWAY_ARCHIVE_GIT_TIMEOUT": "90"}
    assert Config.from_env([], env).git_timeout == 90
    assert Config.from_env(["--git-timeout", "2.5"], env).git_timeout == 2.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        with pytest.raises(SystemExit) as exc:
            Config.from_env(["--git-timeout", bad], env)
        assert exc.value.code == 2


def test_archives_in_s3(capsys: pytest.CaptureFixture[str]) -> None:
    assert Config.from_env([], {**tls_env(), "SLIPWAY_TOKEN": "t"}).archive_url == ""
    env = {**tls_env(), "SLIPWAY_TOKEN": "t", "SLIPWAY_ARCHIVE_URL": "s3://bucket/rack"}
    assert Config.from_env([], env).archive_url == "s3://bucket/rack"
    with pytest.raises(SystemExit) as exc:
        Config.from_env(["--archives", "ftp://bucket"], env)
    assert exc.value.code == 2
    assert "invalid archives URL" in capsys.readouterr().err


def test_the_service_serves_archives_from_s3(s3, token: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import io
    import os

    from client.api.archive import ArchiveClient
    from client.api.channel import open_channel
    from services.archive.server import create_server

    bucket = s3.bucket()
    env = {**tls_env(), "SLIPWAY_TOKEN": token, "SLIPWAY_ARCHIVE_DIR": str(tmp_path), **s3.env}
    before = {k: os.environ.get(k) for k in s3.env}
    os.environ.update(s3.env)
    try:
        config = Config.from_env(["--archives", f"s3://{bucket}/p"], env)
        server = create_server(config, address="127.0.0.1:0")
    finally:
        for key, value in before.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    try:
        archives = ArchiveClient(open_channel(server.address, token, ca=ca()), server.address)
        data = os.urandom(100_000)
        archive = archives.upload(
            "app", io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest()
        )
        assert b"".join(archives.download(archive)) == data
        listed = s3.client().list_objects_v2(Bucket=bucket)["Contents"]
        assert [item["Key"] for item in listed] == [f"p/objects/{archive}"]
        assert not any(tmp_path.rglob("objects/*"))  # nothing on the local disk
    finally:
        server.stop(grace=1)
