"""ARG declarations, named stages and the choice of build args."""

from __future__ import annotations

from services.builder.dockerfile import declared_args, has_stage, select_args

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM $BASE AS base
arg lower
ARG A=1 B C="x y"
# ARG COMMENTED
RUN echo hi \\
    ARG NOT_AN_ARG
ARG QUOTED="a=b, c" \\
    CONTINUED=2
ARG A
FROM --platform=linux/amd64 base As Development
"""


def test_declared_args() -> None:
    assert declared_args(DOCKERFILE) == [
        "BASE",
        "lower",
        "A",
        "B",
        "C",
        "QUOTED",
        "CONTINUED",
    ]


def test_development_stage() -> None:
    assert has_stage(DOCKERFILE, "development")
    assert not has_stage("FROM busybox\nFROM busybox AS dev\n", "development")
    assert not has_stage("FROM busybox\n# FROM x AS development\n", "development")


def test_build_args_only_for_declared_names_given_first_then_env() -> None:
    declared = ["A", "B", "C", "D"]
    given = {"A": "from flag, with = and 'quotes'", "UNDECLARED": "x"}
    env = {"A": "env", "B": "env-b", "OTHER": "y"}
    assert select_args(declared, given, env) == {
        "A": "from flag, with = and 'quotes'",
        "B": "env-b",
    }
