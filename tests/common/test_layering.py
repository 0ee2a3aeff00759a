"""The domain cores import neither gRPC nor generated protobuf code (STYLE: servicers are
thin translators; conversions live in each service's convert.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CORES = [
    "services.archive.store",
    "services.archive.core",
    "services.builder.core",
    "services.builder.worker",
    "services.builder.extract",
    "client.kernel.manifest",
    "services.metadata.store",
    "services.common.push",
    "services.common.docker.types",
    "services.common.docker.fallback",
    "client.kernel.types",
    "client.kernel.errors",
    "client.kernel.context",
    "client.kernel.dockerignore",
]


@pytest.mark.parametrize("module", CORES)
def test_core_imports_no_grpc(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.') "
        "or m.endswith('_pb2') or m.endswith('_pb2_grpc'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"
