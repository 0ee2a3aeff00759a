"""The app environment: variable names, `KEY=VALUE` arguments, and what a change does.

Shared by the CLI (which checks arguments before it talks to the rack) and the metadata
service (which applies a change to the latest release inside one transaction).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from client.kernel.errors import InvalidArgument, NotFound

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_env_name(name: str) -> str:
    """Returns `name` when it is a valid variable name, else raises InvalidArgument."""
    # fullmatch: `$` would let a trailing newline through.
    if not ENV_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid environment variable: {name!r} (must match ^[A-Za-z_][A-Za-z0-9_]*$)"
        )
    return name


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` arguments as a dict in the order given (a repeated key keeps its first
    place and takes its last value). The value is everything after the first `=`."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"invalid environment variable: {item!r} (want KEY=VALUE)")
        values[check_env_name(key)] = value
    return values


@dataclass(frozen=True)
class EnvChange:
    """The environment after a change, and the release description that says what changed."""

    env: dict[str, str]
    description: str


def apply_change(
    env: Mapping[str, str], set_vars: Mapping[str, str], unset: Sequence[str]
) -> EnvChange:
    """Sets `set_vars` and removes `unset` in a copy of `env`.

    The description is `env add:K1,K2 change:K3 remove:K4`: only the kinds that occur, in
    that order, keys in the order given; a key set to the value it has is not listed.
    """
    for key in [*set_vars, *unset]:
        check_env_name(key)
    both = [key for key in set_vars if key in unset]
    if both:
        raise InvalidArgument(f"environment variable both set and unset: {', '.join(both)}")
    if not set_vars and not unset:
        raise InvalidArgument("no environment change given")
    removed = list(dict.fromkeys(unset))
    missing = [key for key in removed if key not in env]
    if missing:
        noun = "env var" if len(missing) == 1 else "env vars"
        raise NotFound(f"{noun} not set: {', '.join(missing)}")
    added = [key for key in set_vars if key not in env]
    changed = [key for key, value in set_vars.items() if key in env and env[key] != value]
    new_env = {k: v for k, v in env.items() if k not in removed}
    new_env.update(set_vars)
    parts = ["env"]
    for kind, keys in (("add", added), ("change", changed), ("remove", removed)):
        if keys:
            parts.append(f"{kind}:{','.join(keys)}")
    return EnvChange(new_env, " ".join(parts))


def env_lines(env: Mapping[str, str]) -> list[str]:
    """`KEY=VALUE` lines, sorted by key."""
    return [f"{key}={env[key]}" for key in sorted(env)]
