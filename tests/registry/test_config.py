"""Registry Config: flags over environment over defaults."""

from __future__ import annotations

import pytest

from services.registry.config import Config
from tests.tls import tls_env, tls_files


def test_defaults_and_environment() -> None:
    config = Config.from_env(
        [], {**tls_env(), "SLIPWAY_TOKEN": "t", "SLIPWAY_REGISTRY_HOST": "127.0.0.1:7404"}
    )
    assert config == Config(
        listen="127.0.0.1:7403",
        token="t",
        registry_host="127.0.0.1:7404",
        docker_host="unix:///var/run/docker.sock",
        tls=tls_files(),
    )
    env = {
        **tls_env(),
        "SLIPWAY_TOKEN": "t",
        "SLIPWAY_REGISTRY_HOST": "r:1",
        "SLIPWAY_LISTEN": "0.0.0.0:1",
        "DOCKER_HOST": "tcp://127.0.0.1:2375",
    }
    config = Config.from_env([], env)
    assert (config.listen, config.registry_host, config.docker_host) == (
        "0.0.0.0:1",
        "r:1",
        "tcp://127.0.0.1:2375",
    )
    config = Config.from_env(["--listen", "127.0.0.1:9", "--registry", "localhost:5000"], env)
    assert (config.listen, config.registry_host) == ("127.0.0.1:9", "localhost:5000")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {**tls_env(), "SLIPWAY_REGISTRY_HOST": "r:1"}, "SLIPWAY_TOKEN is required"),
        ([], {**tls_env(), "SLIPWAY_TOKEN": "t"}, "the registry is required"),
        (["--registry", "http://r:1"], {**tls_env(), "SLIPWAY_TOKEN": "t"}, "invalid registry"),
        (["--registry", "r:1/path"], {**tls_env(), "SLIPWAY_TOKEN": "t"}, "invalid registry"),
    ],
)
def test_bad_configuration_exits_2(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        Config.from_env(argv, env)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_an_ecr_registry_url_replaces_the_registry_host() -> None:
    ecr = "ecr://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    config = Config.from_env([], {**tls_env(), "SLIPWAY_TOKEN": "t", "SLIPWAY_REGISTRY_URL": ecr})
    assert (config.registry_host, config.registry_url) == (ecr.removeprefix("ecr://"), ecr)
