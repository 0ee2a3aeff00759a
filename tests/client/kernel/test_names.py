"""Name checks reject what merely looks valid up to a trailing newline."""

from __future__ import annotations

import pytest

from client.kernel.errors import InvalidArgument
from client.kernel.types import check_app_name


@pytest.mark.parametrize("name", ["web", "a", "my-app-2"])
def test_valid_app_names(name: str) -> None:
    assert check_app_name(name) == name


@pytest.mark.parametrize("name", ["", "Web", "2web", "-web", "web_1", "web\n", "web app", "wéb"])
def test_invalid_app_names(name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid app name"):
        check_app_name(name)
