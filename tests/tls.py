"""TLS for tests: one CA and one server certificate for 127.0.0.1 and localhost, made
once per test process the way `slipway rack start` makes a rack's (client.cli.localrack.tls)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from client.cli.localrack.tls import Authority, CertFiles
from services.common.config import TlsFiles


@functools.cache
def cert_files() -> CertFiles:
    folder = Path(tempfile.mkdtemp(prefix="slipway-tls-"))
    atexit.register(shutil.rmtree, folder, True)
    return Authority(folder / "tls", "test").issue("service", ["127.0.0.1", "localhost"])


def tls_files() -> TlsFiles:
    """What an in-process server speaks TLS with (pass as a service Config's `tls`)."""
    files = cert_files()
    return TlsFiles(files.cert.read_bytes(), files.key.read_bytes(), files.ca.read_bytes())


def tls_env() -> dict[str, str]:
    """The environment a service process needs for TLS."""
    files = cert_files()
    return {
        "SLIPWAY_TLS_CERT": str(files.cert),
        "SLIPWAY_TLS_KEY": str(files.key),
        "SLIPWAY_TLS_CA": str(files.ca),
    }


def ca() -> bytes:
    """The CA a client verifies these servers against."""
    return cert_files().ca.read_bytes()


def tls_channel(address: str):  # type: ignore[no-untyped-def]
    """A TLS channel verified against the test CA that sends no token (health checks,
    calls that must be refused for want of one)."""
    import grpc

    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca()))
