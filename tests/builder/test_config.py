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


ECR = "ecr://123456789012.dkr.ecr.eu-west-1.amazonaws.com"


def test_an_ecr_registry_url_names_the_registry_host() -> None:
    env = {k: v for k, v in ENV.items() if k != "SLIPWAY_REGISTRY_HOST"}
    config = Config.from_env([], {**env, "SLIPWAY_REGISTRY_URL": ECR})
    assert config.registry_host == "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert config.registry_url == ECR


@pytest.mark.parametrize("url", ["ecr://nope", "s3://bucket", "ecr://1.dkr.ecr.x.amazonaws.com"])
def test_a_bad_ecr_url_exits_2(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        Config.from_env([], {**ENV, "SLIPWAY_REGISTRY_URL": url})
    assert exited.value.code == 2
    assert "invalid SLIPWAY_REGISTRY_URL" in capsys.readouterr().err


def test_every_port_needs_tls(capsys: pytest.CaptureFixture[str]) -> None:
    env = {k: v for k, v in ENV.items() if not k.startswith("SLIPWAY_TLS_")}
    with pytest.raises(SystemExit) as exited:
        Config.from_env([], env)
    assert exited.value.code == 2
    assert "SLIPWAY_TLS_CERT, SLIPWAY_TLS_KEY, SLIPWAY_TLS_CA required" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["rack.example", "10.0.0.5", "::1", "[2001:db8::5]"])
def test_the_advertised_name_may_be_a_host_or_an_address(name: str) -> None:
    config = Config.from_env([], {**ENV, "SLIPWAY_ADVERTISE": name})
    assert config.advertise == name.strip("[]")


@pytest.mark.parametrize("name", ["rack.example:7400", "http://rack", "a b"])
def test_a_bad_advertised_name_exits_2(name: str) -> None:
    with pytest.raises(SystemExit):
        Config.from_env([], {**ENV, "SLIPWAY_ADVERTISE": name})
