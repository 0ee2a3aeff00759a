"""`.dockerignore` with Docker's own semantics, and the walk of a build context it implies.

Reading follows moby/patternmatcher's `ignorefile.ReadAll`; matching follows its
`PatternMatcher` (exact, prefix, suffix and regexp patterns, `!` exceptions, later patterns
winning, a pattern matching a parent directory matching everything below it); the walk
follows BuildKit's sender (tonistiigi/fsutil): sorted, symlinks never followed, an excluded
directory skipped whole unless an exception could re-include something inside it, and the
excluded parents of a re-included file sent with it. Paths are relative and `/`-separated.
"""

from __future__ import annotations

import os
import posixpath
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from client.errors import InvalidArgument

EXACT, PREFIX, SUFFIX, REGEXP = "exact", "prefix", "suffix", "regexp"

# Characters that mean something to a regexp but nothing to a Docker pattern.
_REGEXP_ONLY = frozenset(".+()|{}$")
# An exception containing one of these (after a trailing `/**` or `/*`) may match at any
# depth, so BuildKit stops skipping excluded directories altogether.
_PATTERN_CHARS = frozenset("*[]?^\\")


def go_clean(path: str) -> str:
    """Go's `filepath.Clean` on a `/`-separated path."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    if cleaned.startswith("//"):  # POSIX keeps a leading `//`; Go does not
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def read_patterns(text: str) -> list[str]:
    """The patterns of a `.dockerignore` file, as Docker's `ReadAll` returns them: `#`
    comments (only at the very start of a line) and blank lines dropped, whitespace trimmed,
    each pattern cleaned and a leading `/` removed, `!` kept in front of exceptions."""
    patterns = []
    for number, line in enumerate(text.split("\n")):
        line = line.removesuffix("\r")
        if number == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern[0] == "!"
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern[0] == "/":
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def _check_syntax(pattern: str) -> None:
    """Raises InvalidArgument where Go's `filepath.Match` reports ErrBadPattern: an
    unterminated or empty class, a bare `-` or `]` in a class, a trailing backslash."""
    bad = InvalidArgument(f"syntax error in pattern: {pattern}")
    n, i = len(pattern), 0

    def escaped_char(i: int) -> int:
        """Index after one class character (maybe escaped); more must follow it."""
        if i >= n or pattern[i] in "-]":
            raise bad
        if pattern[i] == "\\":
            i += 1
            if i >= n:
                raise bad
        i += 1
        if i >= n:
            raise bad
        return i

    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                raise bad
            i += 2
        elif ch == "[":
            i += 1
            if i < n and pattern[i] == "^":
                i += 1
            ranges = 0
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                i = escaped_char(i)
                if pattern[i] == "-":
                    i = escaped_char(i + 1)
                ranges += 1
        else:
            i += 1


@dataclass(frozen=True)
class Pattern:
    """One cleaned pattern: how it matches and whether it is an exception (`!`)."""

    text: str
    exclusion: bool
    kind: str
    regexp: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str, exclusion: bool) -> Pattern:
        """Translates a pattern the way moby's `Pattern.compile` does."""
        parts: list[str] = []
        kind = EXACT
        n, i, first = len(text), 0, True
        while i < n:
            ch = text[i]
            i += 1
            if ch == "*":
                if i < n and text[i] == "*":
                    i += 1
                    if i < n and text[i] == "/":  # `**/` is `**`
                        i += 1
                    if i >= n:
                        if kind == EXACT:
                            kind = PREFIX
                        else:
                            parts.append(".*")
                            kind = REGEXP
                    else:
                        parts.append("(.*/)?")
                        kind = REGEXP
                    if first:
                        kind = SUFFIX
                else:
                    parts.append("[^/]*")
                    kind = REGEXP
            elif ch == "?":
                parts.append("[^/]")
                kind = REGEXP
            elif ch in _REGEXP_ONLY:
                parts.append("\\" + ch)
            elif ch == "\\":
                if i < n:
                    parts.append(re.escape(text[i]))
                    i += 1
                    kind = REGEXP
                else:
                    parts.append("\\\\")
            elif ch in "[]":
                parts.append(ch)
                kind = REGEXP
            else:
                parts.append(ch)
            first = False
        regexp = None
        if kind == REGEXP:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "possible nested set" for `[[`
                    regexp = re.compile("".join(parts))
            except re.error:
                raise InvalidArgument(f"syntax error in pattern: {text}") from None
        return cls(text=text, exclusion=exclusion, kind=kind, regexp=regexp)

    def matches(self, path: str) -> bool:
        """Whether this pattern alone matches `path` (no parent directories considered)."""
        if self.kind == EXACT:
            return path == self.text
        if self.kind == PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == SUFFIX:
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        assert self.regexp is not None
        return self.regexp.fullmatch(path) is not None

    def without_trailing_glob(self) -> str:
        return self.text.removesuffix("/**").removesuffix("/*")


MatchInfo = tuple[bool, ...]
"""Which patterns matched a directory (or one of its parents), passed down to its children."""


class Matcher:
    """An ordered list of patterns; a path is excluded when the last pattern that matches it
    (or one of its parent directories) is not an exception."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: list[Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            text = go_clean(text)
            exclusion = text[0] == "!"
            if exclusion:
                if len(text) == 1:
                    raise InvalidArgument('illegal exclusion pattern: "!"')
                text = text[1:]
            _check_syntax(text)
            self.patterns.append(Pattern.parse(text, exclusion))
        self.exclusions = any(p.exclusion for p in self.patterns)
        self.only_prefix_exceptions = not any(
            p.exclusion and _PATTERN_CHARS.intersection(p.without_trailing_glob())
            for p in self.patterns
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Matcher:
        """The matcher of a `.dockerignore` file; an empty one when there is no such file."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return cls([])
        except OSError as err:
            raise InvalidArgument(f"cannot read {path}: {err.strerror or err}") from None
        try:
            return cls(read_patterns(data.decode("utf-8", "surrogateescape")))
        except InvalidArgument as err:
            raise InvalidArgument(f".dockerignore: {err}") from None

    @staticmethod
    def _parents(path: str) -> list[str]:
        """`a/b/c` → [`a`, `a/b`]."""
        parts = path.split("/")[:-1]
        return ["/".join(parts[: i + 1]) for i in range(len(parts))]

    def matches(self, path: str) -> bool:
        """Whether `path` is excluded (moby's `MatchesOrParentMatches`)."""
        matched = False
        parents = self._parents(path)
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            match = pattern.matches(path) or any(pattern.matches(p) for p in parents)
            if match:
                matched = not pattern.exclusion
        return matched

    def match_under(self, path: str, parent: MatchInfo | None) -> tuple[bool, MatchInfo]:
        """Whether `path` is excluded, given what matched its parent directory; and what
        matched `path`, for its children (moby's `MatchesUsingParentResults`)."""
        matched = False
        info: list[bool] = []
        for i, pattern in enumerate(self.patterns):
            match = bool(parent and parent[i])
            if not match:
                if pattern.exclusion != matched:
                    info.append(False)
                    continue
                match = pattern.matches(path)
                if not match and not parent:
                    match = any(pattern.matches(p) for p in self._parents(path))
            info.append(match)
            if match:
                matched = not pattern.exclusion
        return matched, tuple(info)

    def can_skip(self, directory: str) -> bool:
        """Whether an excluded directory may be skipped without looking inside: no exception
        could re-include anything below it."""
        if not self.exclusions:
            return True
        if not self.only_prefix_exceptions:
            return False
        prefix = directory + "/"
        return not any(
            (p.without_trailing_glob() + "/").startswith(prefix)
            for p in self.patterns
            if p.exclusion
        )


def walk(
    root: str | os.PathLike[str], matcher: Matcher, always: Sequence[str] = ()
) -> Iterator[str]:
    """The relative paths of the build context under `root`, parents before children, each
    directory's entries sorted by name. `always` names paths sent even when excluded (and
    everything below them). Raises OSError when a directory that is sent cannot be read."""
    forced = tuple(always)
    pending: list[list[object]] = []  # [path, sent] of excluded directories being walked

    def is_forced(path: str) -> bool:
        return any(path == f or path.startswith(f + "/") for f in forced)

    def holds_forced(directory: str) -> bool:
        return any(f.startswith(directory + "/") for f in forced)

    def visit(directory: str, info: MatchInfo | None, excluded: bool) -> Iterator[str]:
        try:
            with os.scandir(os.path.join(root, directory) if directory else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            if excluded:  # BuildKit ignores unreadable directories it would not send
                return
            raise
        for entry in entries:
            path = f"{directory}/{entry.name}" if directory else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            skip, child_info = matcher.match_under(path, info)
            if skip and is_forced(path):
                skip = False
            if skip:
                if is_dir and matcher.can_skip(path) and not holds_forced(path):
                    continue
                if is_dir:
                    pending.append([path, False])
                    yield from visit(path, child_info, True)
                    pending.pop()
                continue
            for parent in pending:
                if not parent[1]:
                    parent[1] = True
                    yield str(parent[0])
            yield path
            if is_dir:
                yield from visit(path, child_info, False)

    yield from visit("", None, False)
