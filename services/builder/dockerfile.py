"""What the builder reads from a Dockerfile: declared `ARG`s and named stages."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping

_INSTRUCTION = re.compile(r"^\s*([A-Za-z]+)(?:\s+(.*))?$", re.S)


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and `\\` continuations joined."""
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not pending:
            continue
        if pending and (not stripped or stripped.startswith("#")):
            continue  # blank and comment lines inside a continuation are skipped
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        match = _INSTRUCTION.match(line)
        if match:
            yield match.group(1).upper(), (match.group(2) or "").strip()
    if pending:
        match = _INSTRUCTION.match(pending)
        if match:
            yield match.group(1).upper(), (match.group(2) or "").strip()


def declared_args(text: str) -> list[str]:
    """Names declared by `ARG` lines (`ARG A`, `ARG A=default`, `ARG A B=1`), each once."""
    names: list[str] = []
    for instruction, args in instructions(text):
        if instruction != "ARG":
            continue
        try:
            words = shlex.split(args, posix=True)
        except ValueError:
            words = args.split()
        for word in words:
            name = word.split("=", 1)[0]
            if name and name not in names:
                names.append(name)
    return names


def has_stage(text: str, stage: str) -> bool:
    """True when some `FROM image AS <stage>` names the stage."""
    for instruction, args in instructions(text):
        if instruction != "FROM":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        if len(words) >= 3 and words[-2].lower() == "as" and words[-1].lower() == stage.lower():
            return True
    return False


#: The ARGs every Dockerfile has without declaring them (Docker's predefined ARGs).
PREDEFINED_ARGS = frozenset(
    name
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
    for name in (proxy, proxy.lower())
)


def select_args(
    declared: list[str], given: Mapping[str, str], env: Mapping[str, str]
) -> dict[str, str]:
    """The build args to pass: each declared name from `given` first, then `env`;
    names that neither has are not passed. Docker's predefined ARGs (the proxies) are
    passed when given, declared or not, as `docker build` passes them."""
    chosen: dict[str, str] = {}
    for name in declared:
        if name in given:
            chosen[name] = given[name]
        elif name in env:
            chosen[name] = env[name]
    for name in PREDEFINED_ARGS & set(given):
        chosen.setdefault(name, given[name])
    return chosen


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _expand(reference: str, values: Mapping[str, str]) -> str:
    """`reference` with its variables replaced; one without a value becomes `$?`."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), "$?"), reference)


def base_images(text: str, args: Mapping[str, str]) -> list[str]:
    """The images the Dockerfile's stages start `FROM`, each once, in order: not
    `scratch`, not an earlier stage's name, with `$VAR`/`${VAR}` taken from `args` or an
    ARG default declared before the first FROM. A reference still holding a variable
    (one that has no value) is left out: the engine resolves it, or says why not."""
    defaults: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False
    for instruction, rest in instructions(text):
        if instruction == "ARG" and not seen_from:
            for word in rest.split():
                name, sep, value = word.partition("=")
                if sep:
                    defaults[name] = value.strip("\"'")
            continue
        if instruction != "FROM":
            continue
        seen_from = True
        words = [w for w in rest.split() if not w.startswith("--")]
        if not words:
            continue
        image = _expand(words[0], {**defaults, **args})
        if len(words) >= 3 and words[-2].lower() == "as":
            stages.add(words[-1].lower())
        if "$" in image or image.lower() in stages or image.lower() == "scratch":
            continue
        if image not in images:
            images.append(image)
    return images
