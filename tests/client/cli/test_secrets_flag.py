"""`--secret` as `docker buildx build --secret` takes it, checked on the client."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.cli.commands.build import parse_secrets
from client.kernel.errors import InvalidArgument
from client.kernel.types import MAX_SECRET_BYTES


def test_file_env_and_bare_forms(tmp_path: Path) -> None:
    (tmp_path / "tok.txt").write_bytes(b"from-file\n")
    (tmp_path / "bare").write_bytes(b"bare-file")
    env = {"API": "from-env", "SAME": "same-env"}
    found = parse_secrets(
        [
            "id=tok,src=tok.txt",
            "id=api,env=API",
            "type=env,id=SAME",
            "id=bare",
            "id=abs,source=" + str(tmp_path / "tok.txt"),
        ],
        env,
        tmp_path,
    )
    assert found == {
        "tok": b"from-file\n",
        "api": b"from-env",
        "SAME": b"same-env",
        "bare": b"bare-file",
        "abs": b"from-file\n",
    }


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("tok", "invalid --secret"),
        ("id=tok,src=a,env=B", "invalid --secret"),
        ("id=tok,colour=red", "invalid --secret"),
        ("src=file", "invalid --secret"),
        ("id=tok,type=ssh", "invalid --secret"),
        ("id=tok,env=NOPE", "secret tok: $NOPE is not set in the environment"),
        ("id=tok,src=missing.txt", "secret tok: cannot read missing.txt: No such file"),
        ("id=../x,env=HOME", "invalid secret id: '../x'"),
    ],
)
def test_bad_flags_say_why_without_values(tmp_path: Path, flag: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_secrets([flag], {"HOME": "/root"}, tmp_path)
    assert str(err.value).startswith(message)


def test_a_secret_given_twice_or_too_large(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="given twice"):
        parse_secrets(["id=a,env=X", "id=a,env=X"], {"X": "1"}, tmp_path)
    (tmp_path / "big").write_bytes(b"x" * (MAX_SECRET_BYTES + 1))
    with pytest.raises(InvalidArgument, match="secret big is too large"):
        parse_secrets(["id=big,src=big"], {}, tmp_path)
