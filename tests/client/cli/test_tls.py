"""The local rack's certificate authority (client.cli.localrack.tls): made once, private,
its certificates naming exactly the addresses a part is reached at and made again when
those change; and how a failed TLS handshake reads to a person."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from client.api.grpcerrors import tls_failure
from client.cli.localrack.tls import Authority, names_for


def _names(cert: Path) -> list[str]:
    alt = (
        x509.load_pem_x509_certificate(cert.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    ips = [str(ip) for ip in alt.get_values_for_type(x509.IPAddress)]
    return sorted(ips + alt.get_values_for_type(x509.DNSName))


def test_the_ca_is_made_once_and_kept_private(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "tls", "r")
    first = authority.ensure()
    assert authority.ensure() == first
    assert Authority(tmp_path / "tls", "r").ensure() == first
    assert (tmp_path / "tls").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "tls").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_a_certificate_names_its_addresses_and_is_made_again_when_they_change(
    tmp_path: Path,
) -> None:
    authority = Authority(tmp_path / "tls", "r")
    names = names_for("10.1.2.3", "rack.example")
    assert names == ["10.1.2.3", "127.0.0.1", "localhost", "rack.example"]
    files = authority.issue("builder", names)
    assert _names(files.cert) == sorted(names)
    cert = files.cert.read_bytes()
    assert authority.issue("builder", names).cert.read_bytes() == cert  # kept
    moved = authority.issue("builder", names_for("0.0.0.0", "other.example"))
    assert _names(moved.cert) == ["127.0.0.1", "localhost", "other.example"]
    assert moved.cert.read_bytes() != cert
    issued = x509.load_pem_x509_certificate(moved.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(authority.ca_file.read_bytes())
    assert issued.issuer == ca.subject
    issued.verify_directly_issued_by(ca)


def test_a_certificate_of_another_ca_is_replaced(tmp_path: Path) -> None:
    files = Authority(tmp_path / "tls", "r").issue("archive", ["127.0.0.1"])
    other = Authority(tmp_path / "other", "o")
    other.ensure()
    for name in ("ca.pem", "ca-key.pem"):
        (tmp_path / "tls" / name).write_bytes((tmp_path / "other" / name).read_bytes())
    again = Authority(tmp_path / "tls", "r").issue("archive", ["127.0.0.1"])
    issued = x509.load_pem_x509_certificate(again.cert.read_bytes())
    issued.verify_directly_issued_by(x509.load_pem_x509_certificate(other.ensure()))
    assert files.cert == again.cert


@pytest.mark.parametrize(
    ("details", "why"),
    [
        (
            "last error: UNKNOWN: ipv4:10.0.0.1:7400: Tls handshake failed (TSI_PROTOCOL_FAILURE):"
            " SSL_ERROR_SSL: error:1000007d:SSL routines:OPENSSL_internal:"
            "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate",
            "its certificate is not signed by the CA this client trusts",
        ),
        (
            "Custom verification check failed with error: UNAUTHENTICATED: "
            "Hostname Verification Check failed.",
            "its certificate does not name 10.0.0.1",
        ),
        (
            "SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER",
            "it does not speak TLS (is it an older Slipway?)",
        ),
        ("failed to connect to all addresses; Connection refused", ""),
    ],
)
def test_a_failed_handshake_reads_as_why(details: str, why: str) -> None:
    assert tls_failure(details, "10.0.0.1:7400") == why


def test_login_ca_must_be_a_readable_pem_certificate(tmp_path: Path) -> None:
    from client.cli.config import read_ca
    from client.kernel.errors import InvalidArgument

    good = Authority(tmp_path / "tls", "r")
    good.ensure()
    assert read_ca(str(good.ca_file)) == good.ca_file.read_text()
    fake = tmp_path / "fake.pem"
    fake.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(InvalidArgument, match="is not a valid PEM certificate$"):
        read_ca(str(fake))
    (tmp_path / "text").write_text("hello")
    with pytest.raises(InvalidArgument, match="is not a PEM certificate$"):
        read_ca(str(tmp_path / "text"))
    with pytest.raises(InvalidArgument, match="^cannot read --ca"):
        read_ca(str(tmp_path / "missing"))
