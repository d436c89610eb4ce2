"""Hand a `ReplicateClient`'s file outputs to the user: saved to disk, or as `FileOutput`s."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from engine._config import ApiConfig
from engine._download import Downloader
from engine._http import ssl_context
from engine._logs import get_logger

__all__ = ["download_output", "file_client"]

log = get_logger("engine.client")


async def download_output(
    downloader: Downloader, output: Any, save_path: str | os.PathLike[str]
) -> str | list[str]:
    """Save an output, or each item of a list of them, through ``downloader`` (on the loop)."""
    target = Path(os.path.abspath(os.path.expanduser(save_path)))  # noqa: PTH100,PTH111,ASYNC240 - no I/O
    if isinstance(output, list | tuple):
        paths = []
        for n, item in enumerate(output):
            dest = target.with_name(f"{target.stem}_{n}{target.suffix}")
            await downloader.fetch(_url(item), dest)
            paths.append(str(dest))
        return paths
    await downloader.fetch(_url(output), target)
    log.info("client.download_output", path=str(target))
    return str(target)


def file_client(api: ApiConfig) -> Any:
    """Return a replicate client used only to read `FileOutput`s, as users expect."""
    from replicate.client import Client  # noqa: PLC0415 - only when file outputs are asked for

    token = api.token.reveal() if api.token else None
    # Our CA bundle, and no kept-alive connections: a FileOutput outlives any place
    # that could close this client, so pooled sockets would leak until GC.
    return Client(api_token=token, base_url=api.base_url, transport=_FileTransport(api))


class _FileTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Serve `FileOutput` reads (sync and async) over the API's TLS settings, unpooled."""

    def __init__(self, api: ApiConfig) -> None:
        context = ssl_context(api.ca_file)
        limits = httpx.Limits(max_keepalive_connections=0)
        self._sync = httpx.HTTPTransport(verify=context, limits=limits)
        self._async = httpx.AsyncHTTPTransport(verify=context, limits=limits)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._sync.handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._async.handle_async_request(request)

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()


def _url(item: Any) -> str:
    url = getattr(item, "url", item)
    if not isinstance(url, str):
        raise TypeError(f"cannot download {type(item).__name__}: expected a FileOutput or URL")
    return url
