"""The allocator tuning every streaming process applies (`keep_freed_chunks`): the chunks
of a stream reuse memory freed by the ones before instead of taking fresh pages from the
kernel (a page fault and a page cleared per 4 KiB) for each one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from client.kernel.memory import keep_freed_chunks

# An import's unpacking of a 128 MiB archive (one gzip'd layer of random bytes), as the
# registry service does it: the page faults taken while it runs.
UNPACK = """
import io, os, resource, sys, tarfile, zlib
from pathlib import Path
if sys.argv[1] == "tuned":
    from client.kernel.memory import keep_freed_chunks
    assert keep_freed_chunks()
from services.registry.buildarchive import unpack
from services.registry.tarstream import TarWriter, file_info, gzip

def chunks(data):
    return (data[i : i + 512 * 1024] for i in range(0, len(data), 512 * 1024))

layer = zlib.compress(os.urandom(128 * 1024 * 1024), 1, 31)
inner = TarWriter()
image = b"".join([*inner.member(file_info("l/layer.tar", len(layer), 0), [layer]), inner.end()])
outer = TarWriter()
pieces = [*outer.member(file_info("build.json", 2, 0), [b"{}"])]
pieces += [*outer.member(file_info("app.B1.tar", len(image), 0), chunks(image)), outer.end()]
source = Path(sys.argv[2]) / "archive"
source.write_bytes(b"".join(gzip(pieces, 0)))
del layer, image, pieces
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
with open(source, "rb") as file:
    found = unpack(iter(lambda: file.read(512 * 1024), b""), Path(sys.argv[2]))
assert found.layers["app.B1.tar"]["l/layer.tar"].size > 128 * 1024 * 1024
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, folder: Path) -> int:
    folder.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", UNPACK, mode, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    return int(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_stream_reuses_freed_chunks(tmp_path: Path) -> None:
    assert keep_freed_chunks() is True
    assert keep_freed_chunks() is True  # once per process; asking again changes nothing
    untuned = faults("default", tmp_path / "default")
    tuned = faults("tuned", tmp_path / "tuned")
    # glibc's defaults keep faulting pages in as chunks pass (3,444 here); tuned, the
    # first chunks' pages are reused from then on (1,168, most of them the scan thread's).
    assert untuned > 2 * tuned, (untuned, tuned)
