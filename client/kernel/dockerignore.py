"""`.dockerignore` with Docker's own semantics, and the walk of a build context it implies.

The reference is what the Docker CLI sends with the classic builder. Reading follows
moby/patternmatcher's `ignorefile.ReadAll`; matching follows its `PatternMatcher` (exact,
prefix, suffix and regexp patterns, `!` exceptions, later patterns winning, a pattern
matching a parent directory matching everything below it, a pattern's regexp built only
when first needed and read as Go's RE2 reads it); the walk follows moby's
`archive.TarWithOptions`: sorted, symlinks never followed, an excluded directory skipped
whole unless the text of an exception starts with its path. Excluded parents of a
re-included entry are sent with it (Docker's receiver creates them anyway), so the archive
is a tree. Paths are relative and `/`-separated.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from client.kernel.errors import InvalidArgument

EXACT, PREFIX, SUFFIX, REGEXP = "exact", "prefix", "suffix", "regexp"

# Characters that mean something to a regexp but nothing to a Docker pattern.
_REGEXP_ONLY = frozenset(".+()|{}$")
# Go's `strings.TrimSpace` (Unicode White_Space); Python's `str.strip` also trims \x1c-\x1f.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"  # noqa: E501


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
        pattern = line.strip(_GO_SPACE)
        if not pattern:
            continue
        invert = pattern[0] == "!"
        if invert:
            pattern = pattern[1:].strip(_GO_SPACE)
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


# --- Go's RE2 dialect, as far as a translated pattern can reach it -------------------------

_Ranges = list[tuple[int, int]]
_MAX_RUNE = 0x10FFFF
_PERL_CLASSES: dict[str, _Ranges] = {
    "d": [(0x30, 0x39)],
    "s": [(0x09, 0x0A), (0x0C, 0x0D), (0x20, 0x20)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
}
_POSIX_CLASSES: dict[str, _Ranges] = {
    "alnum": [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)],
    "alpha": [(0x41, 0x5A), (0x61, 0x7A)],
    "ascii": [(0x00, 0x7F)],
    "blank": [(0x09, 0x09), (0x20, 0x20)],
    "cntrl": [(0x00, 0x1F), (0x7F, 0x7F)],
    "digit": [(0x30, 0x39)],
    "graph": [(0x21, 0x7E)],
    "lower": [(0x61, 0x7A)],
    "print": [(0x20, 0x7E)],
    "punct": [(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)],
    "space": [(0x09, 0x0D), (0x20, 0x20)],
    "upper": [(0x41, 0x5A)],
    "word": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "xdigit": [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)],
}
_CONTROL_ESCAPES = {"a": 0x07, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B}


class _BadRegexp(ValueError):
    """What Go's `regexp.Compile` would reject."""


def _merged(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _negated(ranges: _Ranges) -> _Ranges:
    out, start = [], 0
    for lo, hi in _merged(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _MAX_RUNE:
        out.append((start, _MAX_RUNE))
    return out


def _class_regexp(ranges: _Ranges) -> str:
    """A Python class matching exactly `ranges` (spelled out, so no dialect differs)."""
    merged = _merged(ranges)
    if not merged:
        return "(?!)"
    spelled = (f"\\U{lo:08x}" + (f"-\\U{hi:08x}" if hi > lo else "") for lo, hi in merged)
    return "[" + "".join(spelled) + "]"


def _escape(go: str, i: int) -> tuple[int, int]:
    """The character of the escape at `go[i]` (a backslash) and the index after it."""
    c = go[i + 1] if i + 1 < len(go) else ""
    i += 2
    if c in _CONTROL_ESCAPES:
        return _CONTROL_ESCAPES[c], i
    if c and c in "01234567":
        if c != "0" and not (i < len(go) and go[i] in "01234567"):
            raise _BadRegexp("backreference")  # `\1` alone: RE2 has none
        value = int(c)
        for _ in range(2):
            if i < len(go) and go[i] in "01234567":
                value, i = value * 8 + int(go[i]), i + 1
        return value, i
    if c == "x":
        digits = go[i : i + 2]
        if len(digits) == 2 and all(d in "0123456789abcdefABCDEF" for d in digits):
            return int(digits, 16), i + 2
        raise _BadRegexp("hex escape")  # `\x{…}` cannot occur: braces arrive escaped
    if c in ("p", "P"):
        raise InvalidArgument("Unicode classes (\\p, \\P) are not supported")
    if c and c < "\x80" and not c.isalnum():
        return ord(c), i
    raise _BadRegexp("invalid escape")


def _perl_class(go: str, i: int) -> _Ranges | None:
    c = go[i + 1] if i + 1 < len(go) else ""
    if c.lower() in _PERL_CLASSES and c:
        ranges = _PERL_CLASSES[c.lower()]
        return _negated(ranges) if c.isupper() else ranges
    return None


def _class(go: str, i: int) -> tuple[str, int]:
    """The Python class for the Go class opening at `go[i]`, and the index after it."""
    n, i = len(go), i + 1
    negate = i < n and go[i] == "^"
    i += negate
    ranges: _Ranges = []
    first = True
    while first or i >= n or go[i] != "]":
        if i >= n:
            raise _BadRegexp("missing closing ]")
        first = False
        if go.startswith("[:", i) and (end := go.find(":]", i + 2)) >= 0:
            name = go[i + 2 : end]
            posix = _POSIX_CLASSES.get(name.removeprefix("^"))
            if posix is None or name.startswith("^^"):
                raise _BadRegexp("invalid character class")
            ranges += _negated(posix) if name.startswith("^") else posix
            i = end + 2
            continue
        if go[i] == "\\" and (perl := _perl_class(go, i)) is not None:
            ranges += perl
            i += 2
            continue
        lo, i = _escape(go, i) if go[i] == "\\" else (ord(go[i]), i + 1)
        hi = lo
        if i + 1 < n and go[i] == "-" and go[i + 1] != "]":
            hi, i = _escape(go, i + 1) if go[i + 1] == "\\" else (ord(go[i + 1]), i + 2)
            if hi < lo:
                raise _BadRegexp("invalid character class range")
        ranges.append((lo, hi))
    return _class_regexp(_negated(ranges) if negate else ranges), i + 1


def python_regexp(go: str) -> str:
    """Go's RE2 expression `go` (as patternmatcher builds it) in Python's dialect, to be
    compiled with re.ASCII (Go's `\\b` is ASCII). Raises _BadRegexp where Go would."""
    out: list[str] = []
    i, n = 0, len(go)
    while i < n:
        ch = go[i]
        if ch == "\\":
            c = go[i + 1] if i + 1 < n else ""
            if c == "Q":  # literal text up to `\E` (or the end, `$` included)
                end = go.find("\\E", i + 2)
                out.append(re.escape(go[i + 2 : n if end < 0 else end]))
                i = n if end < 0 else end + 2
            elif c and c in "AbBz":
                out.append("\\Z" if c == "z" else "\\" + c)
                i += 2
            elif (perl := _perl_class(go, i)) is not None:
                out.append(_class_regexp(perl))
                i += 2
            else:
                code, i = _escape(go, i)
                out.append(re.escape(chr(code)))
        elif ch == "[":
            text, i = _class(go, i)
            out.append(text)
        else:
            # `^ . ( ) ? *` only ever come from the translation and mean the same in both;
            # Go's `$` is the very end, as Python's `\Z`.
            out.append("\\Z" if ch == "$" else ch if ch in "^.()?*" else re.escape(ch))
            i += 1
    return "".join(out)


# --- patterns ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """One cleaned pattern: how it matches and whether it is an exception (`!`). A regexp
    pattern keeps Go's expression and is compiled when first used, as Docker does: an
    invalid one fails only if some path is ever checked against it."""

    text: str
    exclusion: bool
    kind: str
    go_regexp: str = ""

    @classmethod
    def parse(cls, text: str, exclusion: bool) -> Pattern:
        """Translates a pattern the way moby's `Pattern.compile` does."""
        parts: list[str] = ["^"]
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
                    parts.append("\\" + text[i])
                    i += 1
                    kind = REGEXP
                else:
                    parts.append("\\")
            elif ch in "[]":
                parts.append(ch)
                kind = REGEXP
            else:
                parts.append(ch)
            first = False
        go_regexp = "".join(parts) + "$" if kind == REGEXP else ""
        return cls(text=text, exclusion=exclusion, kind=kind, go_regexp=go_regexp)

    @functools.cached_property
    def regexp(self) -> re.Pattern[str]:
        """The compiled regexp; raises InvalidArgument (every time) when Go rejects it."""
        try:
            return re.compile(python_regexp(self.go_regexp), re.ASCII)
        except (_BadRegexp, re.error):
            raise InvalidArgument(f"syntax error in pattern: {self.text}") from None
        except InvalidArgument as err:
            raise InvalidArgument(f"pattern {self.text}: {err}") from None

    def matches(self, path: str) -> bool:
        """Whether this pattern alone matches `path` (no parent directories considered)."""
        if self.kind == EXACT:
            return path == self.text
        if self.kind == PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == SUFFIX:
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        return self.regexp.fullmatch(path) is not None


MatchInfo = tuple[bool, ...]
"""Which patterns matched a directory (or one of its parents), passed down to its children."""


class Matcher:
    """An ordered list of patterns; a path is excluded when the last pattern that matches it
    (or one of its parent directories) is not an exception. `origin` prefixes errors."""

    def __init__(self, patterns: Iterable[str], origin: str = "") -> None:
        self.origin = origin
        self.patterns: list[Pattern] = []
        for raw in patterns:
            text = raw.strip(_GO_SPACE)
            if not text:
                continue
            text = go_clean(text)
            exclusion = text[0] == "!"
            if exclusion:
                if len(text) == 1:
                    raise InvalidArgument(f'{origin}illegal exclusion pattern: "!"')
                text = text[1:]
            try:
                _check_syntax(text)
            except InvalidArgument as err:
                raise InvalidArgument(f"{origin}{err}") from None
            self.patterns.append(Pattern.parse(text, exclusion))
        self.exclusions = any(p.exclusion for p in self.patterns)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Matcher:
        """The matcher of a `.dockerignore` file; an empty one when there is no such file."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return cls([])
        except OSError as err:
            raise InvalidArgument(f"cannot read {path}: {err.strerror or err}") from None
        return cls(read_patterns(data.decode("utf-8", "surrogateescape")), ".dockerignore: ")

    def _match(self, pattern: Pattern, path: str) -> bool:
        try:
            return pattern.matches(path)
        except InvalidArgument as err:
            raise InvalidArgument(f"{self.origin}{err}") from None

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
            match = self._match(pattern, path) or any(self._match(pattern, p) for p in parents)
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
                match = self._match(pattern, path)
                if not match and not parent:
                    match = any(self._match(pattern, p) for p in self._parents(path))
            info.append(match)
            if match:
                matched = not pattern.exclusion
        return matched, tuple(info)

    def can_skip(self, directory: str) -> bool:
        """Whether an excluded directory is skipped unread. The classic builder looks inside
        only when the text of some exception starts with the directory's path (`!dir/keep`
        or `!dir/*.txt` for `dir`); `!**/keep` or `!d*/keep` re-include nothing in it."""
        prefix = directory + "/"
        return not any((p.text + "/").startswith(prefix) for p in self.patterns if p.exclusion)


def lister(root: str | os.PathLike[str]) -> Callable[[str], list[tuple[str, bool]]]:
    """The `listdir` of `walk` for a folder on disk: links are not followed."""

    def listdir(directory: str) -> list[tuple[str, bool]]:
        found = []
        with os.scandir(os.path.join(root, directory) if directory else root) as it:
            for entry in it:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                found.append((entry.name, is_dir))
        return sorted(found, key=lambda e: os.fsencode(e[0]))

    return listdir


def walk(
    root: str | os.PathLike[str] | None,
    matcher: Matcher,
    always: Sequence[str] = (),
    listdir: Callable[[str], list[tuple[str, bool]]] | None = None,
) -> Iterator[str]:
    """The relative paths of the build context under `root`, parents before children, each
    directory's entries sorted by name (as bytes, like Go). `always` names paths sent even
    when excluded (and everything below them). Raises OSError when a directory that is sent
    cannot be read. `listdir` (a folder's (name, is a folder) pairs, sorted) reads a tree
    that is not on disk."""
    if listdir is None:
        assert root is not None
        listdir = lister(root)
    forced = tuple(always)
    pending: list[list[object]] = []  # [path, sent] of excluded directories being walked

    def is_forced(path: str) -> bool:
        return any(path == f or path.startswith(f + "/") for f in forced)

    def holds_forced(directory: str) -> bool:
        return any(f.startswith(directory + "/") for f in forced)

    def visit(directory: str, info: MatchInfo | None, excluded: bool) -> Iterator[str]:
        try:
            entries = listdir(directory)
        except PermissionError:
            if excluded:  # Docker passes over unreadable directories it would not send
                return
            raise
        for name, is_dir in entries:
            path = f"{directory}/{name}" if directory else name
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
