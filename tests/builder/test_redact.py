"""Secrets masked in what a build writes."""

from __future__ import annotations

from services.builder.redact import MASK, Redactor


def test_values_whole_and_line_by_line_are_masked() -> None:
    redact = Redactor([b"hunter2", b"first-line\nsecond-line\n", b"hunter2-longer"])
    assert redact("pw=hunter2; again hunter2") == f"pw={MASK}; again {MASK}"
    assert redact("got hunter2-longer") == f"got {MASK}"  # the longer value masked whole
    assert redact("#5 0.1 second-line") == f"#5 0.1 {MASK}"
    assert redact("nothing here") == "nothing here"


def test_no_secrets_changes_nothing() -> None:
    redact = Redactor([b"", b"  \n"])
    assert not redact
    assert redact("line") == "line"


def test_log_writer_masks_every_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from services.builder.logwriter import LogWriter
    from tests.builder.fakes import FakeStore

    store = FakeStore()
    build = store.create_build(store.create_app("app").name)
    writer = LogWriter(store, build.id, redact=Redactor([b"s3cret"]))
    writer.line("value: s3cret")
    writer.close(["ERROR: failed with s3cret"])
    assert [line.text for line in store.stream_logs(build.id)] == [
        f"value: {MASK}",
        f"ERROR: failed with {MASK}",
    ]
