"""Emulate the Replicate HTTP API locally, faithfully enough for the unmodified client.

`Emulator` is the ASGI app and its state, `EmulatorConfig` its knobs, and
`EmulatorServer` serves it over HTTPS on loopback with a throwaway CA::

    with EmulatorServer(EmulatorConfig(time_scale=0.01), ca_file="ca.pem") as server:
        # SSL_CERT_FILE=ca.pem REPLICATE_BASE_URL=server.base_url
        # REPLICATE_API_TOKEN=server.token, then use replicate as usual.
        server.emulator.update(cut_first_downloads=1)
        print(server.emulator.stats.snapshot())

In-process: ``httpx.ASGITransport(app=Emulator(config).app)`` (no lifespan, so no
webhooks unless wrapped in ``async with emulator.running():``; responses are buffered,
so SSE is only useful through the server). Admin, unauthenticated:
``GET /_emulator/stats`` and ``POST /_emulator/config`` (a JSON object of knobs).
"""

from engine.emulator.app import Emulator
from engine.emulator.config import EmulatorConfig
from engine.emulator.server import EmulatorServer

__all__ = ["Emulator", "EmulatorConfig", "EmulatorServer"]
