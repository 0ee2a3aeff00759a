"""Plain progress from BuildKit's trace: numbering, headers, output lines, ends."""

from __future__ import annotations

import base64

from google.protobuf.timestamp_pb2 import Timestamp
from slipway.buildkit import control_pb2 as pb

from services.common.docker.progress import MAX_PARTIAL, PlainProgress


def _at(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _rendered(*updates: pb.StatusResponse) -> list[str]:
    lines: list[str] = []
    progress = PlainProgress(lines.append)
    for update in updates:
        progress.feed_aux(base64.b64encode(update.SerializeToString()).decode())
    progress.close()
    return lines


def test_a_step_from_start_to_done() -> None:
    run = pb.Vertex(digest="sha256:a", name="[web 2/3] RUN make", started=_at(100))
    lines = _rendered(
        pb.StatusResponse(vertexes=[run]),
        pb.StatusResponse(
            logs=[pb.VertexLog(vertex="sha256:a", timestamp=_at(100.25), msg=b"cc main.c\nld")]
        ),
        pb.StatusResponse(
            logs=[pb.VertexLog(vertex="sha256:a", timestamp=_at(100.5), msg=b" app\n")]
        ),
        pb.StatusResponse(
            vertexes=[
                pb.Vertex(digest="sha256:a", name=run.name, started=_at(100), completed=_at(101.23))
            ]
        ),
    )
    assert lines == [
        "#1 [web 2/3] RUN make",
        "#1 0.250 cc main.c",
        "#1 0.500 ld app",
        "#1 DONE 1.2s",
    ]


def test_cached_errors_numbering_and_transfers() -> None:
    lines = _rendered(
        pb.StatusResponse(
            vertexes=[
                pb.Vertex(digest="d1", name="[internal] load build context", started=_at(1)),
                pb.Vertex(digest="d2", name="[2/2] COPY . .", cached=True, started=_at(1)),
            ],
            statuses=[
                pb.VertexStatus(ID="transferring context:", vertex="d1", current=2100),
                pb.VertexStatus(
                    ID="transferring context:", vertex="d1", current=2100, completed=_at(2)
                ),
                # Reported once, however often the engine repeats it.
                pb.VertexStatus(
                    ID="transferring context:", vertex="d1", current=2100, completed=_at(2)
                ),
            ],
        ),
        pb.StatusResponse(
            vertexes=[
                pb.Vertex(digest="d3", name="[3/3] RUN exit 3", started=_at(2)),
                pb.Vertex(
                    digest="d3",
                    name="[3/3] RUN exit 3",
                    started=_at(2),
                    completed=_at(2.5),
                    error="exit code: 3",
                ),
                # A vertex seen again after its end adds nothing.
                pb.Vertex(digest="d2", name="[2/2] COPY . .", cached=True),
            ],
            warnings=[pb.VertexWarning(vertex="d3", short=b"deprecated syntax")],
        ),
    )
    assert lines == [
        "#1 [internal] load build context",
        "#2 [2/2] COPY . .",
        "#2 CACHED",
        "#1 transferring context: 2.10kB done",
        "#3 [3/3] RUN exit 3",
        "#3 ERROR: exit code: 3",
        "#3 WARN: deprecated syntax",
    ]


def test_a_long_transfer_shows_its_bytes_every_two_seconds_then_done() -> None:
    def going(at: float, current: int) -> pb.VertexStatus:
        return pb.VertexStatus(
            ID="transferring context:", vertex="d1", current=current, started=_at(10),
            timestamp=_at(at),
        )  # fmt: skip

    lines = _rendered(
        pb.StatusResponse(
            vertexes=[pb.Vertex(digest="d1", name="[internal] load build context", started=_at(9))],
            statuses=[going(10.5, 1_000), going(11.9, 50_000_000), going(12.1, 60_000_000)],
        ),
        pb.StatusResponse(
            statuses=[
                going(13.0, 90_000_000),  # under two seconds since the last line
                going(14.2, 120_300_000),
                pb.VertexStatus(
                    ID="transferring context:",
                    vertex="d1",
                    current=314_590_000,
                    completed=_at(15),
                ),  # fmt: skip
                going(16.5, 314_590_000),  # after its end: nothing more
            ]
        ),
    )
    assert lines == [
        "#1 [internal] load build context",
        "#1 transferring context: 60.00MB 2.1s",
        "#1 transferring context: 120.30MB 4.2s",
        "#1 transferring context: 314.59MB done",
    ]


def test_a_partial_line_is_printed_at_the_end_and_bounded() -> None:
    lines = _rendered(
        pb.StatusResponse(vertexes=[pb.Vertex(digest="d", name="RUN x", started=_at(0))]),
        pb.StatusResponse(
            logs=[pb.VertexLog(vertex="d", timestamp=_at(0), msg=b"x" * (MAX_PARTIAL + 10))]
        ),
        pb.StatusResponse(logs=[pb.VertexLog(vertex="d", timestamp=_at(0), msg=b"tail")]),
    )
    assert lines[0] == "#1 RUN x"
    assert lines[1] == "#1 0.000 " + "x" * (MAX_PARTIAL + 10)
    assert lines[2] == "#1 0.000 tail"


def test_an_unfinished_last_line_keeps_its_time() -> None:
    lines = _rendered(
        pb.StatusResponse(vertexes=[pb.Vertex(digest="d", name="RUN x", started=_at(10))]),
        pb.StatusResponse(logs=[pb.VertexLog(vertex="d", timestamp=_at(10), msg=b"a\n")]),
        pb.StatusResponse(logs=[pb.VertexLog(vertex="d", timestamp=_at(12.5), msg=b"no end")]),
    )
    assert lines == ["#1 RUN x", "#1 0.000 a", "#1 2.500 no end"]


def test_garbage_in_the_trace_is_skipped() -> None:
    lines: list[str] = []
    progress = PlainProgress(lines.append)
    progress.feed_aux("not base64 at all!!")
    progress.feed_aux({"ID": "x"})
    progress.feed_aux(base64.b64encode(b"\xff\xff\xff").decode())
    assert lines == []
