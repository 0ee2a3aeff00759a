"""The builder's configuration: the rack registry comes through SLIPWAY_REGISTRY_HOST."""

from __future__ import annotations

import pytest

from services.builder.config import Config
from tests.tls import tls_env

ENV = {**tls_env(), "SLIPWAY_TOKEN": "t", "SLIPWAY_REGISTRY_HOST": "127.0.0.1:7404"}


def test_the_registry_host_comes_from_the_environment() -> None:
    config = Config.from_env([], ENV)
    assert (config.registry_host, config.registry_address) == ("127.0.0.1:7404", "127.0.0.1:7403")


@pytest.mark.parametrize("host", ["", "http://127.0.0.1:7404", "127.0.0.1:7404/path"])
def test_a_missing_or_bad_registry_host_exits_2(
    host: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        Config.from_env([], {**ENV, "SLIPWAY_REGISTRY_HOST": host})
    assert exited.value.code == 2
    assert "SLIPWAY_REGISTRY_HOST" in capsys.readouterr().err
