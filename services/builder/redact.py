"""Build secrets kept out of what a build writes: every stored or streamed log line and
the recorded failure reason have each secret value replaced by `****`."""

from __future__ import annotations

from collections.abc import Iterable

MASK = "****"


class Redactor:
    """Replaces secret values in text. A value is matched whole and, when it spans lines,
    line by line too (a log line can only ever hold one of its lines). Longer values
    are replaced first, so one that contains another is masked whole."""

    def __init__(self, values: Iterable[bytes] = ()) -> None:
        needles: set[str] = set()
        for value in values:
            text = value.decode("utf-8", "replace")
            for candidate in (text, text.strip(), *text.splitlines()):
                candidate = candidate.strip("\r")
                if candidate.strip():
                    needles.add(candidate)
        self._needles = sorted(needles, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._needles)

    def __call__(self, text: str) -> str:
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, MASK)
        return text
