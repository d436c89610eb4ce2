"""The engine's httpx transport: a connection the server closed while idle is not reused."""

from __future__ import annotations

from pathlib import Path

import anyio
import httpx
import pytest

from engine._http import ContentRange, async_transport, parse_content_range, ssl_context
from tests.support import tls_server

pytestmark = pytest.mark.anyio

# Keep-alive is implied: only the closed socket tells the client the connection is gone.
_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


async def test_a_connection_closed_by_the_server_while_idle_is_replaced(tmp_path: Path) -> None:
    bodies = []
    with tls_server(tmp_path / "ca.pem", lambda _line, _headers: _ANSWER) as (url, closed):
        transport = async_transport(verify=ssl_context(tmp_path / "ca.pem"))
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                bodies.append((await client.get(f"{url}/")).text)
                assert await anyio.to_thread.run_sync(closed.acquire, True, 5)
    assert bodies == ["ok", "ok", "ok"]  # each on a new connection; none sent into a dead one


@pytest.mark.parametrize(
    ("header", "parsed"),
    [
        ("bytes 0-9/10", ContentRange(0, 9, 10)),
        (" bytes 5-9/* ", ContentRange(5, 9, None)),
        ("bytes */0", ContentRange(None, None, 0)),
        ("bytes 0-9", None),
        ("items 0-9/10", None),
        ("", None),
        (None, None),
    ],
)
def test_one_content_range_parser(header: str | None, parsed: ContentRange | None) -> None:
    assert parse_content_range(header) == parsed
