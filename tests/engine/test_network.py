"""The engine's httpx transport: a connection the server closed while idle is not reused."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import trustme

from engine.gateway import ssl_context
from engine.network import async_transport

pytestmark = pytest.mark.anyio

_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@contextmanager
def closing_server(ca_file: Path, answers: int) -> Iterator[tuple[int, threading.Semaphore]]:
    """Serve ``answers`` keep-alive responses over TLS, each on a connection closed after it.

    The answer does not say ``Connection: close``: only the closed socket tells the client.
    The semaphore is released once per connection closed.
    """
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.ECDSA).configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))
    closed = threading.Semaphore(0)

    def serve() -> None:
        for _ in range(answers):
            raw, _ = listener.accept()
            with context.wrap_socket(raw, server_side=True) as conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                conn.sendall(_ANSWER)
            closed.release()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], closed
    finally:
        thread.join(timeout=5)
        listener.close()


async def test_a_connection_closed_by_the_server_while_idle_is_replaced(tmp_path: Path) -> None:
    bodies = []
    with closing_server(tmp_path / "ca.pem", answers=3) as (port, closed):
        transport = async_transport(verify=ssl_context(tmp_path / "ca.pem"))
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                bodies.append((await client.get(f"https://127.0.0.1:{port}/")).text)
                assert await anyio.to_thread.run_sync(closed.acquire, True, 5)
    assert bodies == ["ok", "ok", "ok"]  # each on a new connection; none sent into a dead one
