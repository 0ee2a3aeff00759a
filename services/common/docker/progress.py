"""BuildKit's plain progress, rendered from the trace the engine streams during a
`POST /build?version=2`: one line per event, as `docker build --progress=plain` shows it.

    #5 [web 2/3] RUN make
    #5 0.412 cc -o app main.c
    #5 DONE 1.2s
    #6 [web 3/3] COPY . .
    #6 CACHED

Steps are numbered in the order they first appear. A step's header is printed once, when
it starts (or is found cached); its output lines carry the seconds since it started; its
end is `DONE <s>s`, `CACHED` or `ERROR: <why>`. Transfers (`transferring context: 2.1kB`)
are printed when they finish, and while they last every PROGRESS_EVERY seconds (of the
engine's own clock) with the bytes so far, not at every update:

    #5 transferring context: 120.30MB 2.0s
    #5 transferring context: 314.59MB done
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from slipway.buildkit import control_pb2

from services.common.docker.types import LineSink

#: The longest partial output line kept for a step before it is printed as it is: a step
#: that prints megabytes without a newline must not grow the builder's memory.
MAX_PARTIAL = 64 * 1024
#: Seconds between the lines of a transfer still going (the engine receiving a context).
PROGRESS_EVERY = 2.0


@dataclass
class _Step:
    number: int
    name: str = ""
    started: float = 0.0
    announced: bool = False
    ended: bool = False
    partial: bytearray = field(default_factory=bytearray)
    #: Seconds into the step of the output last received (what an unfinished line shows).
    offset: float = 0.0
    #: Transfers of this step already reported finished.
    reported: set[str] = field(default_factory=set)
    #: Transfers still going: when each began, and when its bytes were last printed.
    began: dict[str, float] = field(default_factory=dict)
    shown: dict[str, float] = field(default_factory=dict)


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def _size(count: int) -> str:
    """Bytes as BuildKit prints them: `512B`, `2.10kB`, `3.40MB` (decimal units)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.2f}{unit}"
        value /= 1000
    return f"{count}B"  # pragma: no cover - the loop always returns


class PlainProgress:
    """Turns StatusResponse updates into plain-progress lines sent to `on_line`."""

    def __init__(self, on_line: LineSink) -> None:
        self._emit = on_line
        self._steps: dict[str, _Step] = {}
        #: The last error a step reported, for a build that fails without other words.
        self.last_error = ""

    def feed_aux(self, aux: object) -> None:
        """One `moby.buildkit.trace` message's `aux`: a base64 StatusResponse."""
        if not isinstance(aux, str):
            return
        status = control_pb2.StatusResponse()
        try:
            status.ParseFromString(base64.b64decode(aux))
        except (ValueError, DecodeError):  # a bad update is skipped, the build goes on
            return
        self.feed(status)

    def feed(self, status: control_pb2.StatusResponse) -> None:
        for vertex in status.vertexes:
            self._vertex(vertex)
        for update in status.statuses:
            self._status(update)
        for entry in status.logs:
            self._log(entry)
        for warning in status.warnings:
            step = self._step(warning.vertex)
            text = warning.short.decode("utf-8", "replace").strip()
            if text:
                self._emit(f"#{step.number} WARN: {text}")

    def close(self) -> None:
        """Prints what steps left without a newline."""
        for step in self._steps.values():
            self._flush(step)

    # -- the events ------------------------------------------------------------------

    def _step(self, digest: str) -> _Step:
        step = self._steps.get(digest)
        if step is None:
            step = self._steps[digest] = _Step(number=len(self._steps) + 1)
        return step

    def _announce(self, step: _Step) -> None:
        if not step.announced:
            step.announced = True
            self._emit(f"#{step.number} {step.name}")

    def _vertex(self, vertex: control_pb2.Vertex) -> None:
        step = self._step(vertex.digest)
        if vertex.name:
            step.name = vertex.name
        if step.ended:
            return
        if vertex.HasField("started"):
            step.started = _seconds(vertex.started)
        if vertex.cached:
            self._announce(step)
            self._flush(step)
            step.ended = True
            self._emit(f"#{step.number} CACHED")
            return
        if vertex.HasField("started"):
            self._announce(step)
        if vertex.HasField("completed"):
            self._announce(step)
            self._flush(step)
            step.ended = True
            if vertex.error:
                self.last_error = vertex.error
                self._emit(f"#{step.number} ERROR: {vertex.error}")
            else:
                took = max(0.0, _seconds(vertex.completed) - step.started) if step.started else 0
                self._emit(f"#{step.number} DONE {took:.1f}s")

    def _status(self, update: control_pb2.VertexStatus) -> None:
        step = self._step(update.vertex)
        key = update.ID or update.name
        if not update.HasField("completed"):
            self._going(step, key, update)
            return
        if key in step.reported:
            return
        step.reported.add(key)
        self._announce(step)
        what = update.name or update.ID
        amount = _size(update.current) if update.current else ""
        if update.total and update.total != update.current:
            amount = f"{_size(update.current)} / {_size(update.total)}"
        self._emit(f"#{step.number} {what} {amount} done".replace("  ", " "))

    def _going(self, step: _Step, key: str, update: control_pb2.VertexStatus) -> None:
        """A line with the bytes so far, PROGRESS_EVERY seconds after the last one."""
        if key in step.reported or not update.current or not update.HasField("timestamp"):
            return
        when = _seconds(update.timestamp)
        began = step.began.setdefault(key, _seconds(update.started) or when)
        if when - step.shown.get(key, began) < PROGRESS_EVERY:
            return
        step.shown[key] = when
        self._announce(step)
        amount = _size(update.current)
        if update.total:
            amount = f"{amount} / {_size(update.total)}"
        self._emit(f"#{step.number} {update.name or update.ID} {amount} {when - began:.1f}s")

    def _log(self, entry: control_pb2.VertexLog) -> None:
        step = self._step(entry.vertex)
        self._announce(step)
        if not step.started:
            step.started = _seconds(entry.timestamp)
        offset = max(0.0, _seconds(entry.timestamp) - step.started)
        step.offset = offset
        buffer = step.partial
        buffer.extend(entry.msg)
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                break
            self._output(step, bytes(buffer[:cut]), offset)
            del buffer[: cut + 1]
        if len(buffer) > MAX_PARTIAL:
            self._output(step, bytes(buffer), offset)
            buffer.clear()

    def _flush(self, step: _Step) -> None:
        if step.partial:
            self._output(step, bytes(step.partial), step.offset)
            step.partial.clear()

    def _output(self, step: _Step, raw: bytes, offset: float) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        self._emit(f"#{step.number} {offset:.3f} {text}")
