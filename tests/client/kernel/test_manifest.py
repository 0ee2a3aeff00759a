"""convox.yml parsing (SPEC §4), with the exact messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.kernel.errors import InvalidArgument
from client.kernel.manifest import Service, dockerfiles, interpolate, load, parse


def test_build_string_and_map_with_defaults() -> None:
    m = parse(
        "services:\n"
        "  web:\n    build: .\n"
        "  api:\n    build:\n      path: api\n      manifest: Dockerfile.prod\n"
        "  worker:\n    build:\n      manifest: Dockerfile.worker\n"
        "  plain: {}\n",
        {},
    )
    assert m.services == (
        Service("web", ".", "Dockerfile"),
        Service("api", "api", "Dockerfile.prod"),
        Service("worker", ".", "Dockerfile.worker"),
        Service("plain", ".", "Dockerfile"),
    )


def test_image_wins_over_build_and_unknown_keys_are_ignored() -> None:
    m = parse(
        "resources:\n  db:\n    type: postgres\n"
        "services:\n  web:\n    build: app\n    image: busybox:latest\n    port: 3000\n"
        "    scale: {count: 2}\n",
        {},
    )
    assert m.services[0].image == "busybox:latest"


def test_interpolation_happens_before_parsing() -> None:
    text = "services:\n  web:\n    build: ${DIR}\n    image: ${IMAGE}\n"
    m = parse(text, {"DIR": "app"})
    assert m.services[0].path == "app"
    assert m.services[0].image == ""  # unset is empty, so the service is built
    assert m.text == text  # the recorded text is what the user wrote
    assert interpolate("a ${X} $X ${Y}", {"X": "1"}) == "a 1 $X "


def test_required_env_lists_every_missing_key_sorted() -> None:
    text = (
        "environment:\n  - ZED\n  - WITH_DEFAULT=1\n  - '*'\n"
        "services:\n  web:\n    environment:\n      - ALPHA\n      - PRESENT\n"
    )
    with pytest.raises(InvalidArgument) as err:
        parse(text, {"PRESENT": "yes"})
    assert str(err.value) == "required env: ALPHA, ZED"
    parse(text, {"PRESENT": "", "ALPHA": "a", "ZED": "z"})


def test_invalid_service_names_are_all_reported() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse("services:\n  Web: {}\n  ok: {}\n  1bad:\n    build: .\n", {})
    assert str(err.value) == (
        "validation errors:\n"
        "  service Web: invalid name (must match ^[a-z][a-z0-9-]*$)\n"
        "  service 1bad: invalid name (must match ^[a-z][a-z0-9-]*$)"
    )


def test_structural_errors() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse("services:\n  web:\n    build: [a]\n    environment: FOO\n", {})
    assert str(err.value) == (
        "validation errors:\n"
        "  service web: build must be a path or a map\n"
        "  service web: environment must be a list"
    )
    with pytest.raises(InvalidArgument, match="^validation errors:\n  services must be a map"):
        parse("services: [web]\n", {})


def test_invalid_yaml_names_the_line_and_column() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse("services:\n  web:\n    build: .\n   image: x\n", {})
    assert str(err.value) == (
        "invalid manifest: convox.yml line 4, column 4: "
        "expected <block end>, but found '<block mapping start>'"
    )


def test_missing_manifest_names_the_path_given(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as err:
        load(tmp_path, "", {})
    assert str(err.value) == "no such file: convox.yml"
    with pytest.raises(InvalidArgument) as err:
        load(tmp_path, "deploy/convox.prod.yml", {})
    assert str(err.value) == "no such file: deploy/convox.prod.yml"
    with pytest.raises(InvalidArgument, match="no such file: ../convox.yml"):
        load(tmp_path / "sub", "../convox.yml", {})


def test_build_path_must_stay_inside_the_tree(tmp_path: Path) -> None:
    (tmp_path / "convox.yml").write_text("services:\n  web:\n    build: ../elsewhere\n")
    with pytest.raises(InvalidArgument) as err:
        load(tmp_path, "convox.yml", {})
    assert str(err.value) == "build path escapes the build folder: ../elsewhere"
    (tmp_path / "link").symlink_to("/tmp")
    (tmp_path / "convox.yml").write_text("services:\n  web:\n    build: link\n")
    with pytest.raises(InvalidArgument, match="build path escapes the build folder: link"):
        load(tmp_path, "convox.yml", {})
    (tmp_path / "convox.yml").write_text(
        "services:\n  web:\n    build:\n      manifest: ../../Dockerfile\n"
    )
    with pytest.raises(InvalidArgument, match="build manifest escapes the build folder"):
        load(tmp_path, "convox.yml", {})


def test_load_reads_a_manifest_in_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "convox.yml").write_text("services:\n  web:\n    build: .\n")
    assert load(tmp_path, "ops/convox.yml", {}).services[0].name == "web"


def test_image_wins_over_build_given_by_a_merge() -> None:
    m = parse(
        "x-base: &base\n  build:\n    path: app\n    manifest: Dockerfile.app\n"
        "services:\n"
        "  built:\n    <<: *base\n"
        "  pulled:\n    '<<': *base\n    image: busybox:latest\n",
        {},
    )
    built, pulled = m.services
    assert (built.path, built.dockerfile, built.image) == ("app", "Dockerfile.app", "")
    assert pulled.image == "busybox:latest"
    assert dockerfiles(m) == ["app/Dockerfile.app"]


def test_load_names_the_manifest_in_yaml_errors(tmp_path: Path) -> None:
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "other.yml").write_text("services:\n  web: [\n")
    with pytest.raises(InvalidArgument) as err:
        load(tmp_path, "ops/other.yml", {})
    assert str(err.value).startswith("invalid manifest: ops/other.yml line 3, column 1: ")
