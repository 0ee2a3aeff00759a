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


def test_the_predefined_proxy_args_pass_undeclared_when_given() -> None:
    given = {"HTTP_PROXY": "http://proxy:3128", "no_proxy": "localhost", "UNDECLARED": "x"}
    env = {"HTTPS_PROXY": "from the app env: not a build arg"}
    assert select_args(["A"], given, env) == {
        "HTTP_PROXY": "http://proxy:3128",
        "no_proxy": "localhost",
    }


def test_base_images_resolve_args_and_skip_stages() -> None:
    from services.builder.dockerfile import base_images

    text = (
        "ARG TAG=1.36\nARG UNSET\nFROM busybox:${TAG} AS build\nFROM build AS again\n"
        "FROM scratch\nFROM $UNSET\nFROM --platform=linux/amd64 alpine:3 AS final\n"
        "FROM busybox:1.36\n"
    )
    assert base_images(text, {}) == ["busybox:1.36", "alpine:3"]
    assert base_images(text, {"TAG": "latest", "UNSET": "debian"}) == [
        "busybox:latest",
        "debian",
        "alpine:3",
        "busybox:1.36",
    ]
