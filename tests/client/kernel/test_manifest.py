"""convox.yml parsing (SPEC §4), with the exact messages users see."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.kernel.errors import InvalidArgument
from client.kernel.manifest import (
    MAX_LISTED,
    MAX_MANIFEST,
    Service,
    dockerfiles,
    interpolate,
    load,
    parse,
    required_keys,
)


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
    # As Convox: whatever stands between `${` and `}` names the variable.
    assert interpolate("${a-b} ${} ${ X } ${X", {"a-b": "1", " X ": "2"}) == "1  2 ${X"
    # Before parsing: a value may be YAML of its own.
    m = parse("services:\n  web:\n    build: ${BUILD}\n", {"BUILD": "{path: api, manifest: D}"})
    assert (m.services[0].path, m.services[0].dockerfile) == ("api", "D")
    with pytest.raises(InvalidArgument, match="larger than 16777216 characters once"):
        parse("a: ${BIG}${BIG}\n", {"BIG": "x" * (MAX_MANIFEST // 2)})


def test_required_env_lists_every_missing_key_sorted() -> None:
    text = (
        "environment:\n  - ZED\n  - WITH_DEFAULT=1\n  - '*'\n"
        "services:\n  web:\n    environment:\n      - ALPHA\n      - PRESENT\n"
    )
    with pytest.raises(InvalidArgument) as err:
        parse(text, {"PRESENT": "yes"})
    assert str(err.value) == "required env: ALPHA, ZED"
    parse(text, {"PRESENT": "", "ALPHA": "a", "ZED": "z"})


def test_invalid_service_names_are_all_reported_in_convox_words() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse("services:\n  Bad_Name: {}\n  ok: {}\n  1bad:\n    build: .\n", {})
    assert str(err.value) == (
        "validation errors:\n"
        "service name Bad_Name invalid, must contain only lowercase alphanumeric and dashes\n"
        "service name 1bad invalid, must contain only lowercase alphanumeric and dashes"
    )


def test_a_long_list_of_violations_is_bounded() -> None:
    names = [f"Bad{i}{'x' * 1000}" for i in range(MAX_LISTED + 30)]
    with pytest.raises(InvalidArgument) as err:
        parse("services:\n" + "".join(f"  {name}: {{}}\n" for name in names), {})
    lines = str(err.value).splitlines()
    assert lines[0] == "validation errors:" and len(lines) == 1 + MAX_LISTED
    assert lines[1].startswith("service name Bad0xxx") and len(lines[1]) < 300
    assert lines[-1] == "and 31 more"


def test_structural_errors() -> None:
    with pytest.raises(InvalidArgument) as err:
        parse("services:\n  web:\n    build: [a]\n    environment: FOO\n", {})
    assert str(err.value) == (
        "validation errors:\n"
        "service web: build must be a path or a map\n"
        "service web: environment must be a list"
    )
    with pytest.raises(InvalidArgument, match="^validation errors:\nservices must be a map"):
        parse("services: [web]\n", {})
    with pytest.raises(InvalidArgument, match="^validation errors:\nthe manifest must be a map"):
        parse("- web\n", {})


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


def test_top_level_environment_starts_each_services_own() -> None:
    m = parse(
        "environment:\n  - GLOBAL=1\n  - SHARED\n"
        "x-env: &common [COMMON=1, FROM_ALIAS]\n"
        "services:\n"
        "  web:\n    environment:\n      - OWN\n      - *common\n      - 42\n      - true\n"
        "  bar:\n",
        {},
        check_env=False,
    )
    web, bar = m.services
    assert m.environment == ("GLOBAL=1", "SHARED")
    # A list inside the list (an alias) is taken apart; what is not a string is skipped.
    assert web.environment == ("GLOBAL=1", "SHARED", "OWN", "COMMON=1", "FROM_ALIAS")
    assert bar.environment == ("GLOBAL=1", "SHARED")
    assert required_keys(m) == ["SHARED", "OWN", "FROM_ALIAS"]


# A manifest of the kind Convox's own loader is tested on: every section, many service
# keys, anchors, a quoted merge key, and services with no keys at all.
FULL = """\
balancers:
  main:
    service: api
    ports:
      3000:
        protocol: TCP
        port: 1000
      3001: 5000
environment:
  - DEVELOPMENT=true
  - OTHERGLOBAL
params:
  Foo: bar
resources:
  database:
    type: postgres
    options:
      size: db.t2.large
services:
  api:
    annotations:
      - eks.amazonaws.com/role-arn=arn:aws:iam::123456789012:role/x
    build:
      manifest: Dockerfile2
      path: api
    deployment: {minimum: 25, maximum: 110}
    domain: ${HOST}.example.org
    environment:
      - DEFAULT=test
      - SECRET
    health: {interval: 10}
    port: 1000
    ports: [2000, 3000/udp]
    resources: [database]
    scale: 3-10
    test: make ${BAR} test
    tls: {redirect: false}
  proxy: &proxy
    command: bash
    domain: ["bar.example.org", "*.example.org"]
    image: ubuntu:16.04
    environment:
      - SECRET
    health: /auth
    port: https:2000
    scale: {cpu: 512, memory: 1024}
  foo:
    command: foo
    drain: 60
    port: {scheme: https, port: 3000}
    singleton: true
    timeout: 3600
  bar:
  scaler:
    scale:
      count: 1-5
      targets: {cpu: 50, memory: 75}
  inherit:
    "<<": *proxy
    command: inherit
  agent:
    agent: true
    ports: [5000/udp, 5001]
timers:
  alpha:
    command: bin/alpha
    service: api
    schedule: "*/1 * * * ?"
"""


def test_a_full_convox_manifest_builds_what_convox_builds() -> None:
    m = parse(FULL, {"SECRET": "s", "OTHERGLOBAL": "o"})
    assert [(s.name, s.image, s.path, s.dockerfile) for s in m.services] == [
        ("api", "", "api", "Dockerfile2"),
        ("proxy", "ubuntu:16.04", ".", "Dockerfile"),
        ("foo", "", ".", "Dockerfile"),
        ("bar", "", ".", "Dockerfile"),
        ("scaler", "", ".", "Dockerfile"),
        ("inherit", "ubuntu:16.04", ".", "Dockerfile"),  # merged from proxy: pulled
        ("agent", "", ".", "Dockerfile"),
    ]
    inherit = m.services[5]
    assert inherit.environment == ("DEVELOPMENT=true", "OTHERGLOBAL", "SECRET")
    assert dockerfiles(m) == [
        "api/Dockerfile2",
        "./Dockerfile",
        "./Dockerfile",
        "./Dockerfile",
        "./Dockerfile",
    ]
    with pytest.raises(InvalidArgument, match="^required env: OTHERGLOBAL, SECRET$"):
        parse(FULL, {})


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


def test_load_without_env_checks_leaves_required_keys_to_the_rack(tmp_path: Path) -> None:
    (tmp_path / "convox.yml").write_text("services:\n  web:\n    environment: [NEEDED]\n")
    assert load(tmp_path, "convox.yml", {}, check_env=False).services[0].name == "web"
    with pytest.raises(InvalidArgument, match="^required env: NEEDED$"):
        load(tmp_path, "convox.yml", {})
