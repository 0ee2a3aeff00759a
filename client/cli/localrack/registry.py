"""A local rack's own registry (Docker Distribution): its credentials (htpasswd), its
configuration (TLS from the rack's CA once other machines reach it), the engines of this
machine told to trust it, and the TLS of every part (their certificates and the
environment naming them)."""

from __future__ import annotations

import os
import secrets
import ssl
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console

from client.cli.localrack.layout import Layout
from client.cli.localrack.tls import Authority, CertFiles, names_for
from client.kernel.errors import Unavailable


def registry_tls(layout: Layout) -> ssl.SSLContext | None:
    """How this machine verifies the rack registry: against the rack's CA when it serves
    TLS (a rack reached beyond loopback), None for plain HTTP on loopback."""
    if not layout.beyond_loopback:
        return None
    return ssl.create_default_context(cafile=str(layout.tls / "ca.pem"))


def registry_answers(address: str, tls: ssl.SSLContext | None) -> bool:
    """Whether the registry answers; without credentials it says 401, which is an answer."""
    scheme = "https" if tls is not None else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{address}/v2/", timeout=2, context=tls) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as err:
        err.close()
        return err.code == 401
    except (urllib.error.URLError, OSError):
        return False


REGISTRY_USER = "slipway"


def registry_password(layout: Layout) -> str:
    """The registry's password: generated at the first start, kept with its user name in
    `registry.auth` (0600); the registry gets only its bcrypt hash (htpasswd)."""
    path = layout.registry_auth_file
    if path.exists():
        user, _, password = path.read_text().strip().partition(":")
        if user == REGISTRY_USER and password:
            return password
    # Written whole, then renamed: a start killed half-way leaves no broken file.
    password = secrets.token_urlsafe(24)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{REGISTRY_USER}:{password}\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    return password


def htpasswd_line(password: str) -> str:
    try:
        import bcrypt  # the rack extra's: Distribution's htpasswd takes bcrypt hashes only
    except ImportError as err:
        raise Unavailable(f"bcrypt is not installed ({err}): install slipway[rack]") from None
    # Distribution checks the hash on every request. The password is 192 random bits, so a
    # work factor adds no protection against guessing; bcrypt's default (12) would cost
    # 0.3 s a request on this kind of machine, the minimum (4) about 1 ms.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    return f"{REGISTRY_USER}:{hashed}\n"


def certificate(layout: Layout, part: str) -> CertFiles:
    """`part`'s certificate, for every name it is reached at."""
    names = names_for(layout.listen, layout.public_host)
    return Authority(layout.tls, layout.name).issue(part, names)


def tls_env(layout: Layout, part: str) -> dict[str, str]:
    files = certificate(layout, part)
    return {
        "SLIPWAY_TLS_CERT": str(files.cert),
        "SLIPWAY_TLS_KEY": str(files.key),
        "SLIPWAY_TLS_CA": str(files.ca),
    }


# Where a Docker engine on this machine looks for the CA of a registry it talks to.
ENGINE_CERTS = Path("/etc/docker/certs.d")


def trust_registry(layout: Layout, console: Console) -> None:
    """Tells the Docker engines of this machine to trust the rack registry's CA (they
    read `/etc/docker/certs.d/HOST:PORT/ca.crt` at each push and pull). An engine on
    another machine needs the same file there (README, "Racks other machines use")."""
    folder = ENGINE_CERTS / layout.advertised("distribution")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o755)
        target = folder / "ca.crt"
        partial = folder / "ca.crt.partial"
        partial.write_bytes((layout.tls / "ca.pem").read_bytes())
        os.chmod(partial, 0o644)  # a CA certificate is public
        os.replace(partial, target)
    except OSError as err:
        console.print(
            f"[yellow]cannot make this machine's Docker engine trust the rack registry "
            f"({err.strerror}): copy {layout.tls / 'ca.pem'} to {folder / 'ca.crt'}[/]"
        )


def registry_config(layout: Layout) -> Path:
    folder = layout.data / "distribution"
    folder.mkdir(parents=True, exist_ok=True)
    htpasswd = folder / "htpasswd"
    htpasswd.write_text(htpasswd_line(registry_password(layout)))
    config = folder / "config.yml"
    http = f"http:\n  addr: {layout.bind('distribution')}\n"
    if layout.beyond_loopback:
        # Other machines push and pull here: TLS, with a certificate from the rack's CA.
        files = certificate(layout, "distribution")
        http += f"  tls:\n    certificate: {files.cert}\n    key: {files.key}\n"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        "  delete:\n    enabled: true\n"
        "auth:\n"
        f"  htpasswd:\n    realm: slipway\n    path: {htpasswd}\n" + http
    )
    return config
