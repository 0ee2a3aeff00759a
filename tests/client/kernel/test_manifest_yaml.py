"""YAML as Convox (go-yaml) reads a convox.yml: anchors and merge keys, safe, bounded, and
errors that name a line and a column without echoing the input."""

from __future__ import annotations

import pytest

from client.kernel.errors import InvalidArgument
from client.kernel.manifest_yaml import MAX_DEPTH, MAX_MERGED, MAX_PROBLEM, load


def _error(text: str, name: str = "convox.yml") -> str:
    with pytest.raises(InvalidArgument) as err:
        load(text, name)
    return str(err.value)


@pytest.mark.parametrize("key", ["<<", '"<<"', "'<<'", "!!merge <<"])
def test_merge_keys_plain_or_quoted(key: str) -> None:
    text = (
        "services:\n"
        "  proxy: &proxy\n    image: ubuntu:16.04\n    command: bash\n"
        f"  inherit:\n    {key}: *proxy\n    command: inherit\n"
    )
    assert load(text, "convox.yml")["services"]["inherit"] == {
        "image": "ubuntu:16.04",
        "command": "inherit",
    }


def test_explicit_keys_override_merged_ones_wherever_they_stand() -> None:
    text = (
        "base: &base {image: base, command: base}\n"
        "before:\n  image: mine\n  '<<': *base\n"
        "after:\n  <<: *base\n  image: mine\n"
    )
    data = load(text, "convox.yml")
    assert data["before"] == data["after"] == {"image": "mine", "command": "base"}


def test_a_list_of_aliases_merges_the_earlier_first() -> None:
    text = (
        "a: &a {image: from-a, path: a}\n"
        "b: &b {image: from-b, manifest: Dockerfile.b}\n"
        'both:\n  "<<": [*a, *b]\n'
        "reversed:\n  <<: [*b, *a]\n"
        "inline:\n  <<: [{image: inline}, *a]\n"
    )
    data = load(text, "convox.yml")
    assert data["both"] == {"image": "from-a", "path": "a", "manifest": "Dockerfile.b"}
    assert data["reversed"] == {"image": "from-b", "manifest": "Dockerfile.b", "path": "a"}
    assert data["inline"] == {"image": "inline", "path": "a"}


def test_merges_of_merges_and_nested_mappings() -> None:
    text = (
        "one: &one {build: {path: one}, image: ''}\n"
        "two: &two\n  '<<': *one\n  environment: [A]\n"
        "three:\n  <<: *two\n  build:\n    <<: {path: x, manifest: Dockerfile.three}\n"
        "    path: three\n"
    )
    assert load(text, "convox.yml")["three"] == {
        "build": {"path": "three", "manifest": "Dockerfile.three"},
        "image": "",
        "environment": ["A"],
    }


def test_an_anchor_defined_again_replaces_the_earlier_one() -> None:
    text = "a: &x {image: first}\nb: *x\nc: &x {image: second}\nd: *x\n"
    data = load(text, "convox.yml")
    assert (data["b"], data["d"]) == ({"image": "first"}, {"image": "second"})


def test_aliases_of_scalars_and_lists() -> None:
    text = "image: &img busybox:latest\nenv: &env [A, B]\nweb: {image: *img, environment: *env}\n"
    assert load(text, "convox.yml")["web"] == {"image": "busybox:latest", "environment": ["A", "B"]}


def test_a_quoted_key_other_than_the_merge_key_stays_a_key() -> None:
    assert load("'<<x': 1\n'<': 2\n", "convox.yml") == {"<<x": 1, "<": 2}


def test_syntax_errors_name_the_file_line_and_column() -> None:
    assert _error("services:\n  web:\n    build: .\n   image: x\n") == (
        "invalid manifest: convox.yml line 4, column 4: "
        "expected <block end>, but found '<block mapping start>'"
    )
    assert _error("services:\n  web:\n\tbuild: .\n", "deploy/other.yml") == (
        "invalid manifest: deploy/other.yml line 3, column 1: "
        "found character '\\t' that cannot start any token"
    )
    assert _error("services: {web: [a}\n").startswith(
        "invalid manifest: convox.yml line 1, column "
    )
    assert _error("a: *nope\n") == (
        "invalid manifest: convox.yml line 1, column 4: found undefined alias 'nope'"
    )
    assert _error("services:\n  web:\n    image: \x00\n") == (
        "invalid manifest: convox.yml line 3, column 12: "
        "unacceptable character #x0000: special characters are not allowed"
    )


def test_bad_merges_are_errors_with_a_position() -> None:
    assert _error("services:\n  web:\n    <<: busybox\n") == (
        "invalid manifest: convox.yml line 3, column 9: "
        "a merge key needs a mapping or a list of mappings"
    )
    assert _error("a: &a [x]\nweb:\n  '<<': [*a]\n").startswith(
        "invalid manifest: convox.yml line 3, column 9: a merge key needs a mapping"
    )
    assert _error("a: &a\n  b: 1\n  <<: *a\n") == (
        "invalid manifest: convox.yml line 1, column 4: a merge key merges a mapping into itself"
    )


def test_only_plain_data_is_read() -> None:
    message = _error("services: !!python/object/apply:os.system [echo hi]\n")
    assert message.startswith("invalid manifest: convox.yml line 1, column 11: ")
    assert "could not determine a constructor" in message


def test_errors_never_echo_the_input_at_length() -> None:
    message = _error(f"a: *{'x' * 100_000}\n")
    assert len(message) < MAX_PROBLEM + 100 and message.endswith("…")
    assert "\n" not in _error("a: 'unterminated\n" + "b\n" * 1000)


def test_nesting_is_bounded() -> None:
    fine = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert load(fine, "convox.yml") is not None
    assert _error("a: " + "[" * 100_000) == (
        f"invalid manifest: convox.yml line 1, column {MAX_DEPTH + 3}: "
        f"nested more than {MAX_DEPTH} levels deep"
    )


def test_merge_chains_are_bounded() -> None:
    """Anchors deeper in the file than the merge that names the last of them: flattening
    it flattens the whole chain at once."""
    count = MAX_DEPTH + 5
    chain = "".join(f"    - &a{i} {{<<: *a{i - 1}, k{i}: {i}}}\n" for i in range(1, count))
    text = f"x:\n  - - &a0 {{k0: 0}}\n{chain}y: {{<<: *a{count - 1}}}\n"
    assert f"merge keys nested more than {MAX_DEPTH} levels deep" in _error(text)
    short = "".join(f"    - &a{i} {{<<: *a{i - 1}, k{i}: {i}}}\n" for i in range(1, 10))
    data = load(f"x:\n  - - &a0 {{k0: 0}}\n{short}y: {{<<: *a9}}\n", "convox.yml")
    assert data["y"] == {f"k{i}": i for i in range(10)}


def test_merged_entries_are_bounded() -> None:
    """Few lines that merge a big mapping many times: a merge bomb, refused."""
    keys = 1000
    base = "base: &base {" + ", ".join(f"k{i}: {i}" for i in range(keys)) + "}\n"
    copies = "".join(f"m{i}: {{<<: *base}}\n" for i in range(MAX_MERGED // keys + 1))
    assert "merge keys copy more than" in _error(base + copies)
    # The same alias again and again copies each key once.
    repeated = "base: &base {a: 1, b: 2}\n" + "".join(
        f"m{i}: {{<<: [{', '.join(['*base'] * 50)}]}}\n" for i in range(100)
    )
    assert load(repeated, "convox.yml")["m99"] == {"a": 1, "b": 2}
