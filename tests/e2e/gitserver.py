"""A test helper: git repositories served over HTTP by the real `git http-backend` (CGI)
behind a small threaded web server on 127.0.0.1, with Basic auth on chosen path prefixes,
plus a few functions to make repositories to serve."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
COPY_SIZE = 64 * 1024

# A fixed identity and no outside configuration, so test repositories are reproducible.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


def git(cwd: Path, *args: str) -> str:
    """Runs `git args…` in `cwd` and returns its stdout; fails the test when git does."""
    proc = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"git {' '.join(args)} failed:\n{proc.stderr}"
    return proc.stdout


def write_files(folder: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def commit(work: Path, files: Mapping[str, str], message: str) -> str:
    """Writes `files` into the work tree, commits everything, returns the commit sha."""
    write_files(work, files)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD").strip()


def new_work_tree(path: Path, branch: str = "main") -> Path:
    """An empty repository with a work tree at `path`, on `branch`."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    return path


def publish(work: Path, bare: Path) -> Path:
    """A bare copy of `work` (every branch and tag) at `bare`, HEAD as in `work`."""
    if bare.exists():
        shutil.rmtree(bare)
    git(work.parent, "clone", "-q", "--bare", "--no-local", str(work), str(bare))
    return bare


class _Handler(BaseHTTPRequestHandler):
    """Runs `git http-backend` for every GET and POST, CGI style, streaming both ways."""

    server: _Server
    protocol_version = "HTTP/1.0"  # the response ends when the connection closes

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base name
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server name
        self._serve()

    def do_POST(self) -> None:  # noqa: N802 - http.server name
        self._serve()

    def _user(self, path: str) -> str | None:
        """The authenticated user ('' when none is needed), or None when refused."""
        for prefix, (user, password) in self.server.auth.items():
            if path.startswith(prefix):
                header = self.headers.get("Authorization", "")
                expected = base64.b64encode(f"{user}:{password}".encode()).decode()
                return user if header == f"Basic {expected}" else None
        return ""

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.server.requests.append(f"{self.command} {path}")
        user = self._user(path)
        if user is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.0",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": user,
            # http-backend reads these request headers from the environment, as CGI has it.
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        length = self.headers.get("Content-Length")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if length is not None:
            env["CONTENT_LENGTH"] = length
        proc = subprocess.Popen(
            [HTTP_BACKEND],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None and proc.stdout is not None
        feeder = threading.Thread(
            target=self._feed, args=(proc.stdin, int(length or 0), chunked), daemon=True
        )
        feeder.start()
        try:
            self._relay(proc.stdout)
        finally:
            feeder.join(30)
            proc.stdout.close()
            proc.wait(30)

    def _feed(self, stdin: IO[bytes], length: int, chunked: bool) -> None:
        """Streams the request body into the backend (decoding a chunked one)."""
        try:
            if chunked:
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    _copy(self.rfile, stdin, size)
                    self.rfile.readline()
            else:
                _copy(self.rfile, stdin, length)
        except (BrokenPipeError, ConnectionError):
            pass
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass

    def _relay(self, stdout: IO[bytes]) -> None:
        """The CGI headers become the HTTP status and headers; the body is streamed."""
        status, headers = 200, []
        while True:
            line = stdout.readline().rstrip(b"\r\n")
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            else:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        try:
            while data := stdout.read1(COPY_SIZE):  # type: ignore[attr-defined]
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionError):
            pass


def _copy(src: io.BufferedIOBase | IO[bytes], dst: IO[bytes], length: int) -> None:
    while length > 0:
        data = src.read(min(COPY_SIZE, length))
        if not data:
            break
        dst.write(data)
        length -= len(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, auth: dict[str, tuple[str, str]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.auth = auth
        self.requests: list[str] = []


class GitServer:
    """Serves every repository under `root` at `http://127.0.0.1:<port>/<path>`.

    `auth` maps a path prefix (e.g. `/private/`) to the one user and password allowed
    there; any other request under it gets 401."""

    def __init__(self, root: Path, auth: Mapping[str, tuple[str, str]] | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = _Server(self.root, dict(auth or {}))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def requests(self) -> list[str]:
        """`METHOD /path` of every request so far."""
        return self._server.requests

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name.lstrip('/')}"

    def start(self) -> GitServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
