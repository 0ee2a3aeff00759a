"""Logging for the services: handlers set once at start-up, the build id on every record
made while handling a build. No gRPC here, so domain cores can use it."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    """Log records to stderr with time, logger and (when set) the build id."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class BuildLogAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Carries the build id on every record made while handling a build."""

    def process(self, msg, kwargs):  # type: ignore[no-untyped-def]
        return f"[{self.extra['build']}] {msg}", kwargs  # type: ignore[index]


def one_line(message: str) -> str:
    """A failure reason: the first line, or `head: a; b` when the first line introduces a list."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {'; '.join(lines[1:])}"
    return lines[0]
