"""The local-rack supervisor's own bookkeeping: which builders a rack has, what each is
given, and which start options it refuses (the processes themselves are tested end to
end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.cli.localrack.layout import BuilderSlot, Layout, record_builders, recorded_builders
from client.cli.localrack.rack import _service_env, start_rack
from client.kernel.errors import InvalidArgument


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout("r", 7400, tmp_path)


def test_a_rack_always_has_builder_1_at_its_base_port(layout: Layout) -> None:
    assert recorded_builders(layout) == [BuilderSlot(1, "127.0.0.1:7400")]


def test_recorded_builders_come_back_in_order(layout: Layout) -> None:
    slots = [BuilderSlot(1, "127.0.0.1:7400"), BuilderSlot(3, "127.0.0.1:9", "tcp://h:2375")]
    record_builders(layout, [slots[1], slots[0]])
    assert recorded_builders(layout) == slots
    assert not list(layout.data.glob("*.partial"))


@pytest.mark.parametrize(
    "text", ["", "{", '{"a": 1}', '[{"number": "x"}]', '[{"number": 99, "address": "a"}]']
)
def test_a_damaged_record_still_gives_builder_1(layout: Layout, text: str) -> None:
    layout.builders_file.write_text(text)
    assert recorded_builders(layout) == [BuilderSlot(1, "127.0.0.1:7400")]


def test_each_builder_has_its_own_name_port_scratch_and_engine(layout: Layout) -> None:
    one = _service_env("builder", layout, "tok", "unix:///main.sock")
    two = _service_env(
        "builder", layout, "tok", "unix:///main.sock", BuilderSlot(2, "127.0.0.1:9", "tcp://h:1")
    )
    assert (one["SLIPWAY_BUILDER_ID"], two["SLIPWAY_BUILDER_ID"]) == ("builder-1", "builder-2")
    assert (one["SLIPWAY_LISTEN"], two["SLIPWAY_LISTEN"]) == ("127.0.0.1:7400", "127.0.0.1:9")
    assert (one["DOCKER_HOST"], two["DOCKER_HOST"]) == ("unix:///main.sock", "tcp://h:1")
    assert one["SLIPWAY_SCRATCH_DIR"] != two["SLIPWAY_SCRATCH_DIR"]
    # Every builder reaches the same metadata, archive and registry services.
    for key in ("SLIPWAY_METADATA_ADDRESS", "SLIPWAY_ARCHIVE_ADDRESS", "SLIPWAY_REGISTRY_HOST"):
        assert one[key] == two[key]


def test_database_and_archives_reach_their_services(tmp_path: Path) -> None:
    layout = Layout("r", 7400, tmp_path, database="postgresql://u@h/db", archives="s3://b/p")
    assert (
        _service_env("metadata", layout, "t", "")["SLIPWAY_DATABASE_URL"] == "postgresql://u@h/db"
    )
    assert _service_env("archive", layout, "t", "")["SLIPWAY_ARCHIVE_URL"] == "s3://b/p"
    plain = Layout("r", 7400, tmp_path)
    assert "SLIPWAY_DATABASE_URL" not in _service_env("metadata", plain, "t", "")
    assert "SLIPWAY_ARCHIVE_URL" not in _service_env("archive", plain, "t", "")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"builders": 0}, "invalid number of builders"),
        ({"builders": 33}, "invalid number of builders"),
        ({"database": "mysql://x/y"}, "invalid --database"),
        ({"database": "postgresql://u@h:5432"}, "invalid --database"),
        ({"archives": "gs://bucket"}, "invalid --archives"),
        ({"archives": "s3:///prefix"}, "invalid --archives"),
    ],
)
def test_bad_start_options_are_refused_before_anything_starts(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        start_rack("r", None, tmp_path / "data", None, **options)  # type: ignore[arg-type]
    assert not (tmp_path / "data").exists()


# Addresses: where parts bind, where this machine reaches them, what the rack announces.


@pytest.mark.parametrize(
    ("listen", "advertise", "bind", "local", "announced", "beyond"),
    [
        ("127.0.0.1", "", "127.0.0.1:7400", "127.0.0.1:7400", "127.0.0.1:7400", False),
        (
            "127.0.0.1",
            "rack.example",
            "127.0.0.1:7400",
            "127.0.0.1:7400",
            "rack.example:7400",
            True,
        ),
        ("10.0.0.5", "", "10.0.0.5:7400", "10.0.0.5:7400", "10.0.0.5:7400", True),
        ("0.0.0.0", "localhost", "0.0.0.0:7400", "127.0.0.1:7400", "localhost:7400", True),
        ("::1", "", "[::1]:7400", "[::1]:7400", "[::1]:7400", False),
        ("::", "2001:db8::5", "[::]:7400", "127.0.0.1:7400", "[2001:db8::5]:7400", True),
    ],
)
def test_where_a_rack_binds_is_reached_and_is_announced(
    tmp_path: Path,
    listen: str,
    advertise: str,
    bind: str,
    local: str,
    announced: str,
    beyond: bool,
) -> None:
    layout = Layout("r", 7400, tmp_path, listen=listen, advertise=advertise)
    assert layout.bind("builder") == bind
    assert layout.address("builder") == local
    assert layout.advertised("builder") == announced
    # A wildcard or another name means other machines may come: the registry serves TLS.
    assert layout.beyond_loopback is beyond


def test_builders_follow_the_rack_to_its_new_listen_address(tmp_path: Path) -> None:
    before = Layout("r", 7400, tmp_path)
    record_builders(before, [BuilderSlot(1, "127.0.0.1:7400"), BuilderSlot(2, "127.0.0.1:9100")])
    after = Layout("r", 7400, tmp_path, listen="10.0.0.5")
    assert [slot.address for slot in recorded_builders(after)] == ["10.0.0.5:7400", "10.0.0.5:9100"]


def test_the_builder_announces_the_advertised_name(tmp_path: Path) -> None:
    layout = Layout("r", 7400, tmp_path, listen="0.0.0.0", advertise="rack.example")
    env = _service_env("builder", layout, "t", "unix:///x.sock")
    assert env["SLIPWAY_ADVERTISE"] == "rack.example"
    assert env["SLIPWAY_LISTEN"] == "0.0.0.0:7400"
    assert env["SLIPWAY_ARCHIVE_ADDRESS"] == "127.0.0.1:7401"  # its own calls stay local
    assert env["SLIPWAY_REGISTRY_HOST"] == "rack.example:7404"  # image references
    assert env["SLIPWAY_REGISTRY_CA"] == str(tmp_path / "tls" / "ca.pem")
    for name in ("SLIPWAY_TLS_CERT", "SLIPWAY_TLS_KEY", "SLIPWAY_TLS_CA"):
        assert Path(env[name]).exists(), name


def test_a_rack_on_ecr_has_no_registry_of_its_own(tmp_path: Path) -> None:
    url = "ecr://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    layout = Layout("r", 7400, tmp_path, registry=url)
    assert "distribution" not in layout.parts
    env = _service_env("registry", layout, "t", "unix:///x.sock")
    assert env["SLIPWAY_REGISTRY_URL"] == url
    assert "SLIPWAY_REGISTRY_HOST" not in env and "SLIPWAY_REGISTRY_AUTH_FILE" not in env


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"listen": "not-an-ip"}, "invalid --listen"),
        ({"listen": "203.0.113.77"}, "is not an address of this machine"),
        ({"listen": "0.0.0.0"}, "--listen 0.0.0.0 needs --advertise HOST"),
        ({"advertise": "bad name!"}, "invalid --advertise"),
        ({"advertise": "host:7400"}, "invalid --advertise"),
        ({"registry": "https://registry.example"}, "invalid --registry"),
        ({"registry": "ecr://12.dkr.ecr.eu-west-1.amazonaws.com"}, "invalid --registry"),
    ],
)
def test_bad_addresses_and_registries_are_refused_before_anything_starts(
    tmp_path: Path, options: dict[str, str], message: str
) -> None:
    from rich.console import Console

    data = tmp_path / "rack"
    with pytest.raises(InvalidArgument, match=message):
        start_rack("r", 7400, data, Console(file=open("/dev/null", "w")), **options)  # noqa: SIM115
    assert not data.exists()
