"""The allocator tuning every streaming process applies (`keep_freed_chunks`): the chunks
of a stream reuse memory freed by the ones before instead of taking fresh pages from the
kernel (a page fault and a page cleared per 4 KiB) for each one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A thread gzips and gunzips CHUNKS chunks of 512 KiB as an export and an import do
# (services.registry.tarstream): the page faults the process takes meanwhile.
STREAM = """
import os, resource, sys, threading
if sys.argv[1] == "tuned":
    from client.kernel.memory import keep_freed_chunks
    assert keep_freed_chunks() and keep_freed_chunks()  # asking twice changes nothing
from services.registry.tarstream import gunzip, gzip

block = os.urandom(512 * 1024)

def stream():
    for _ in gunzip(gzip((block for _ in range(int(sys.argv[2]))), 0)):
        pass

before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
worker = threading.Thread(target=stream)
worker.start()
worker.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES_PER_CHUNK = 512 * 1024 // 4096


def faults(mode: str, chunks: int) -> int:
    out = subprocess.run(
        [sys.executable, "-c", STREAM, mode, str(chunks)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    return int(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_stream_reuses_freed_chunks() -> None:
    # glibc's defaults: fresh pages for much of every chunk (35,820 faults for 200 here).
    assert faults("default", 200) > 200 * PAGES_PER_CHUNK // 2
    # Tuned: the first chunks' pages, then the same ones again however long the stream
    # (1,892 faults for 200 chunks and 1,900 for 1,000 here).
    short, long = faults("tuned", 200), faults("tuned", 600)
    assert short < 20 * PAGES_PER_CHUNK
    assert long < short + 10 * PAGES_PER_CHUNK
