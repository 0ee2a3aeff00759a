"""The local-rack supervisor's own bookkeeping: which builders a rack has, what each is
given, and which start options it refuses (the processes themselves are tested end to
end)."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.cli.localrack.rack import (
    BuilderSlot,
    Layout,
    _builders,
    _record_builders,
    _service_env,
    start_rack,
)
from client.kernel.errors import InvalidArgument


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout("r", 7400, tmp_path)


def test_a_rack_always_has_builder_1_at_its_base_port(layout: Layout) -> None:
    assert _builders(layout) == [BuilderSlot(1, "127.0.0.1:7400")]


def test_recorded_builders_come_back_in_order(layout: Layout) -> None:
    slots = [BuilderSlot(1, "127.0.0.1:7400"), BuilderSlot(3, "127.0.0.1:9", "tcp://h:2375")]
    _record_builders(layout, [slots[1], slots[0]])
    assert _builders(layout) == slots
    assert not list(layout.data.glob("*.partial"))


@pytest.mark.parametrize(
    "text", ["", "{", '{"a": 1}', '[{"number": "x"}]', '[{"number": 99, "address": "a"}]']
)
def test_a_damaged_record_still_gives_builder_1(layout: Layout, text: str) -> None:
    layout.builders_file.write_text(text)
    assert _builders(layout) == [BuilderSlot(1, "127.0.0.1:7400")]


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
