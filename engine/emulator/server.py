"""Serve the emulator over HTTPS on loopback, in its own thread and event loop."""

from __future__ import annotations

import asyncio
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import trustme
import uvicorn

from engine.emulator.app import Emulator
from engine.emulator.config import EmulatorConfig

__all__ = ["EmulatorServer"]

_START_TIMEOUT = 10.0
_SHUTDOWN_GRACE = 0.3


class _PromptServer(uvicorn.Server):
    """Stop within a fraction of a second even when clients keep idle TLS connections.

    uvicorn closes idle keep-alive connections on shutdown, but a TLS close waits for the
    peer's close_notify, which a client that never closes its pool (replicate's) does not
    send; uvicorn would then wait out its whole graceful timeout. An emulator loses
    nothing by aborting those connections after a short grace.
    """

    async def _wait_tasks_to_complete(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SHUTDOWN_GRACE
        # uvicorn exposes no event for "connections drained"; poll briefly, as it does.
        while self.server_state.connections and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        await super()._wait_tasks_to_complete()


class EmulatorServer:
    """Run `Emulator` with uvicorn over TLS from a throwaway trustme CA.

    A sync context manager, so sync and async clients in the caller's thread both work:
    the server has its own thread and loop. On exit it stops uvicorn (running the app's
    lifespan shutdown), joins the thread and removes its temporary key material.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        ca_file: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.emulator = Emulator(config)
        self.host, self._port = host, port
        self._ca_file = Path(ca_file) if ca_file is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: _PromptServer | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._error: BaseException | None = None

    @property
    def token(self) -> str:
        """Return the bearer token the server accepts."""
        return self.emulator.config.token

    @property
    def port(self) -> int:
        """Return the bound port (known once entered)."""
        assert self._socket is not None, "enter the server first"
        return int(self._socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        """Return ``https://host:port``."""
        return f"https://{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """Return the path of the CA certificate PEM that clients must trust."""
        assert self._ca_file is not None, "enter the server first"
        return self._ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """Return a client SSL context trusting only this server's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def __enter__(self) -> EmulatorServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="replicate-emulator-")
        tmp = Path(self._tmp.name)
        # ECDSA keys are generated in milliseconds, RSA in hundreds.
        ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        cert = ca.issue_cert("127.0.0.1", "localhost", key_type=trustme.KeyType.ECDSA)
        cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
        if self._ca_file is None:
            self._ca_file = tmp / "ca.pem"
        self._ca_file.parent.mkdir(parents=True, exist_ok=True)
        ca.cert_pem.write_to_path(str(self._ca_file))
        # Bind here so the port is known before the thread starts and no race can take it.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.host, self._port))
        config = uvicorn.Config(
            self.emulator.app,
            ssl_keyfile=str(tmp / "key.pem"),
            ssl_certfile=str(tmp / "cert.pem"),
            log_config=None,
            access_log=False,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        config.load()
        assert config.ssl is not None
        config.ssl.sni_callback = self._on_client_hello
        self._server = _PromptServer(config)
        self._thread = threading.Thread(target=self._run, name="replicate-emulator")
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if (
                self._error is not None
                or not self._thread.is_alive()
                or time.monotonic() > deadline
            ):
                self.__exit__(None, None, None)
                raise RuntimeError("the emulator did not start") from self._error
            time.sleep(0.005)
        return self

    def _on_client_hello(self, _sock: object, _name: str | None, _ctx: ssl.SSLContext) -> None:
        # OpenSSL calls this for every ClientHello, with or without a server name.
        self.emulator.stats.handshake()

    def _run(self) -> None:
        assert self._server is not None
        assert self._socket is not None
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        if self._socket is not None:
            self._socket.close()
        if self._tmp is not None:
            self._tmp.cleanup()
        self._server = self._thread = self._tmp = None
