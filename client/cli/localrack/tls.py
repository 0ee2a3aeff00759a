"""A local rack's certificate authority and the certificates of its parts.

`slipway rack start` makes, once, a CA of the rack's own (`tls/ca.pem`, its key
`tls/ca-key.pem`) and, per part, a certificate it signs (`tls/<part>.pem` and
`tls/<part>-key.pem`) naming every address the part is reached at: the listen address, the
advertised name, and loopback. A certificate is made again when the names it must carry
change (a new `--advertise`) or it nears its end; the CA stays, so clients that trust it go
on trusting the rack. The folder is 0700 and every file 0600 (SPEC §6).

Keys are ECDSA P-256: small, quick to make, and accepted by gRPC, Go's TLS (the
registry, the Docker engine) and OpenSSL alike.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.kernel.errors import Unavailable

CA_DAYS = 3650
CERT_DAYS = 825
# A certificate with less than this left is made again at the next start.
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class CertFiles:
    """Where one part's certificate and key are, and the CA that signed them."""

    cert: Path
    key: Path
    ca: Path


def _crypto():  # type: ignore[no-untyped-def]
    """The `cryptography` package, imported when a rack makes certificates (the rack
    extra has it; the CLI alone does not need it)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as err:
        raise Unavailable(
            f"cryptography is not installed ({err}): install slipway[rack] to run a local rack"
        ) from None
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _write_private(path: Path, data: bytes) -> None:
    """Writes `data` to `path` 0600, whole, then renames it into place."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Authority:
    """The rack's CA in `folder` (made on first use) and the certificates it signs."""

    def __init__(self, folder: Path, rack: str) -> None:
        self.folder = folder
        self.rack = rack

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def ensure(self) -> bytes:
        """The CA's certificate (PEM), made when there is none yet."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        key_file = self.folder / "ca-key.pem"
        if self.ca_file.exists() and key_file.exists():
            return self.ca_file.read_bytes()
        x509, hashes, serialization, ec, _, name_oid = _crypto()
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, f"Slipway rack {self.rack} CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(key_file, key_pem)
        _write_private(self.ca_file, cert.public_bytes(serialization.Encoding.PEM))
        return self.ca_file.read_bytes()

    def issue(self, part: str, names: Iterable[str]) -> CertFiles:
        """`part`'s certificate for `names` (IP addresses and DNS names), made again
        when it is missing, names other addresses, nears its end or was signed by another
        CA."""
        ca_pem = self.ensure()
        wanted = sorted(set(names))
        files = CertFiles(
            self.folder / f"{part}.pem", self.folder / f"{part}-key.pem", self.ca_file
        )
        if self._current(files, wanted, ca_pem):
            return files
        x509, hashes, serialization, ec, eku, name_oid = _crypto()
        ca_cert = x509.load_pem_x509_certificate(ca_pem)
        ca_key = serialization.load_pem_private_key(
            (self.folder / "ca-key.pem").read_bytes(), password=None
        )
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[Any] = []
        for name in wanted:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, f"{self.rack} {part}")])
            )
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([eku.SERVER_AUTH, eku.CLIENT_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(
            files.key,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        _write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))
        return files

    def _current(self, files: CertFiles, wanted: list[str], ca_pem: bytes) -> bool:
        """Whether the certificate on disk names exactly `wanted`, is signed by this CA and
        has more than RENEW_BEFORE left."""
        if not (files.cert.exists() and files.key.exists()):
            return False
        x509, *_ = _crypto()
        from cryptography.exceptions import InvalidSignature

        try:
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            ca_cert = x509.load_pem_x509_certificate(ca_pem)
            alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            return False
        have = sorted(
            [str(ip) for ip in alt.get_values_for_type(x509.IPAddress)]
            + list(alt.get_values_for_type(x509.DNSName))
        )
        wanted_norm = sorted(_normal(name) for name in wanted)
        try:
            cert.verify_directly_issued_by(ca_cert)  # a CA made again signs anew
        except (ValueError, TypeError, InvalidSignature):
            return False
        return have == wanted_norm and cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def names_for(listen_host: str, advertise: str) -> list[str]:
    """The names a part's certificate carries: loopback (the rack's own calls and `rack
    status`), the listen address unless it is a wildcard, and the advertised name."""
    names = {"127.0.0.1", "localhost"}
    if listen_host not in ("0.0.0.0", "::", ""):
        names.add(listen_host)
    if advertise:
        names.add(advertise)
    return sorted(names)
