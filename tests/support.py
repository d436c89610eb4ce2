"""Small helpers shared by test modules (fixtures live in conftest.py files)."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trustme

from engine import ApiConfig, Secret


def api_config(server: Any) -> ApiConfig:
    """Return an `ApiConfig` that reaches ``server`` (an `EmulatorServer`)."""
    return ApiConfig(token=Secret(server.token), base_url=server.base_url, ca_file=server.ca_file)


def sha256_of(path: Path) -> str:
    """Hash a file independently of the code under test, reading it back from disk."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# An answer is the raw response, or its pieces: a generator may block between them (a
# server that stalls mid-body, or before its first byte).
Answer = Callable[[str, dict[str, str]], bytes | Iterable[bytes]]


@contextmanager
def tls_server(ca_file: Path, answer: Answer) -> Iterator[tuple[str, threading.Semaphore]]:
    """Serve HTTPS on loopback for behaviours the emulator does not have, one answer per
    connection, then close it.

    ``answer`` gets the request line and the headers (names in lower case) and returns the
    raw response. Yields the base URL and a semaphore released once per connection closed.
    The CA that clients must trust is written to ``ca_file``.
    """
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.ECDSA).configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # so the loop sees `stop`
    stop = threading.Event()
    closed = threading.Semaphore(0)

    def handle(raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            with context.wrap_socket(raw, server_side=True) as conn:
                request = b""
                while b"\r\n\r\n" not in request and (data := conn.recv(4096)):
                    request += data
                head, _, body = request.partition(b"\r\n\r\n")
                line, *lines = head.decode("latin-1").split("\r\n")
                fields = {
                    k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)
                }
                # Read the body too: closing on unread bytes resets the connection.
                length = int(fields.get("content-length") or 0)
                while len(body) < length and (data := conn.recv(65536)):
                    body += data
                reply = answer(line, fields)
                for piece in [reply] if isinstance(reply, bytes) else reply:
                    conn.sendall(piece)
        except (ssl.SSLError, OSError):
            pass  # a client that went away (mid-handshake, mid-stall): serve the next one
        closed.release()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            # One thread per connection: a stalled answer must not hold the next one.
            threading.Thread(target=handle, args=(raw,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}", closed
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@contextmanager
def silent_server() -> Iterator[str]:
    """Accept TCP connections on loopback and never say a word: TLS never completes.

    Yields an https base URL. The sockets are held open (not refused, not closed) until
    the block ends, as a wedged load balancer does.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()
