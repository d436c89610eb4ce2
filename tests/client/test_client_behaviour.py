"""`ReplicateClient` behaviour beyond the seed's examples: retries, config, token hygiene.

Everything runs against the emulator over HTTPS with the real replicate client inside;
assertions are on what the emulator counted and what the caller sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import stamina
from replicate.helpers import FileOutput
from structlog.testing import capture_logs

from engine import (
    ConfigError,
    InvalidRequestError,
    ModelError,
    PredictionCanceledError,
    PredictionTimeoutError,
    ReplicateClient,
    get_replicate_client,
    reset_replicate_client,
)

FLUX = "black-forest-labs/flux-schnell"
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fresh singleton, scratch cwd; stamina skips its sleeps but keeps configured attempts."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REPLICATE_API_KEY", raising=False)
    monkeypatch.delenv("REPLICATE_MAX_RETRIES", raising=False)
    monkeypatch.delenv("REPLICATE_TIMEOUT", raising=False)
    reset_replicate_client()
    with stamina.set_testing(True, attempts=10, cap=True):
        yield
    reset_replicate_client()


@pytest.fixture
def client(replicate_env: Any) -> Iterator[ReplicateClient]:
    # The emulator's list is never behind here: a lost create is believed absent soon.
    with ReplicateClient(poll_interval=0.02, settle=0.2) as client:
        yield client


def test_a_lagging_list_does_not_make_the_client_pay_twice(replicate_env: Any) -> None:
    """Stored, answered 500, and the list a second behind: found after the window."""
    replicate_env.emulator.update(
        create_5xx_first=1, create_5xx_after_store=True, fault_status=500, list_lag=1.0
    )
    with ReplicateClient(poll_interval=0.02, settle=3.0) as client:
        assert client.run_model(FLUX, {"prompt": "a"}, use_file_output=False)

    s = stats(replicate_env)
    assert (s["predictions_created"], s["duplicates"]) == (1, {})
    assert create_requests(replicate_env) == 1


def stats(server: Any) -> dict[str, Any]:
    return dict(server.emulator.stats.snapshot())


def create_requests(server: Any) -> int:
    """Return how many create requests reached the emulator, whatever their answer."""
    return sum(
        n
        for key, n in stats(server)["requests"].items()
        if key.split(" ")[0].endswith("predictions.create")
    )


# -- retries ---------------------------------------------------------------------------


def test_transient_5xx_on_get_recovers(client: ReplicateClient, replicate_env: Any) -> None:
    replicate_env.emulator.update(get_5xx_first=3)

    output = client.run_model(FLUX, {"prompt": "a"}, use_file_output=False)

    assert output
    s = stats(replicate_env)
    assert s["predictions_created"] == 1
    assert any(k.endswith(" 503") for k in s["requests"]), s["requests"]


def test_5xx_before_store_is_looked_for_then_created_once(
    client: ReplicateClient, replicate_env: Any
) -> None:
    """A 5xx answer to a create may hide a stored prediction: list first, then create.

    Looked for at once and again when the settle window ends (the list can lag).
    """
    replicate_env.emulator.update(create_5xx_first=1)

    assert client.run_model(FLUX, {"prompt": "a"}, use_file_output=False)

    s = stats(replicate_env)
    assert create_requests(replicate_env) == 2
    assert s["requests"]["predictions.list 200"] == 2
    assert s["predictions_created"] == 1


def test_429_on_create_waits_retry_after_and_creates_once(
    client: ReplicateClient, replicate_env: Any
) -> None:
    replicate_env.emulator.update(throttle_next_creates=1)

    started = time.monotonic()
    output = client.run_model(FLUX, {"prompt": "a"}, use_file_output=False)
    elapsed = time.monotonic() - started

    assert output
    s = stats(replicate_env)
    assert s["throttled"] == 1
    assert s["predictions_created"] == 1
    assert elapsed >= 1.0  # the emulator's Retry-After is at least one second


def test_422_is_not_retried(client: ReplicateClient, replicate_env: Any) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        client.run_model(FLUX, {})  # prompt is required

    assert caught.value.status == 422
    assert "prompt" in str(caught.value)
    assert stats(replicate_env)["predictions_created"] == 0
    assert create_requests(replicate_env) == 1


def test_failed_prediction_is_not_retried(client: ReplicateClient, replicate_env: Any) -> None:
    replicate_env.emulator.update(fail_first_per_input=1)

    with pytest.raises(ModelError) as caught:
        client.run_model(FLUX, {"prompt": "fails once"})

    assert caught.value.prediction.status == "failed"
    assert stats(replicate_env)["predictions_created"] == 1


def test_one_prediction_per_successful_run(client: ReplicateClient, replicate_env: Any) -> None:
    for i in range(3):
        client.run_model(FLUX, {"prompt": f"p{i}"})
    client.run_model(f"stability-ai/sdxl:{SDXL_VERSION}", {"prompt": "versioned"})

    s = stats(replicate_env)
    assert s["predictions_created"] == 4
    assert s["duplicates"] == {}


class _DropFirstConnections:
    """A loopback TCP proxy that closes its first ``drop`` connections at once, then relays."""

    def __init__(self, target_port: int, drop: int) -> None:
        self.target_port = target_port
        self.drop = drop
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.drop:
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Close as well as shut down: a socket left for the garbage collector warns
            # (ResourceWarning) in whichever later test happens to be running.
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._stop = True
        self.listener.close()


def test_connection_errors_recover_and_create_once(
    replicate_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections closed before TLS completes are provably unsent: even a create retries."""
    proxy = _DropFirstConnections(replicate_env.port, drop=2)
    try:
        monkeypatch.setenv("REPLICATE_BASE_URL", f"https://127.0.0.1:{proxy.port}")
        client = ReplicateClient(poll_interval=0.02)

        output = client.run_model(
            FLUX, {"prompt": "through a flaky network"}, use_file_output=False
        )
    finally:
        proxy.close()

    assert output
    assert proxy.accepted >= 3
    assert stats(replicate_env)["predictions_created"] == 1


def test_cut_download_is_resumed(client: ReplicateClient, replicate_env: Any) -> None:
    replicate_env.emulator.update(cut_first_downloads=1, video_size=512 * 1024)
    output = client.run_model("kling-ai/kling-video", {"prompt": "v"})

    path = client.download_output(output, "deep/er/video.mp4")

    assert isinstance(path, str)
    assert Path(path).stat().st_size == 512 * 1024
    assert stats(replicate_env)["downloads_cut"] == 1
    assert not list(Path(path).parent.glob("*.part"))


def test_max_retries_zero_gives_up_on_first_error(replicate_env: Any) -> None:
    replicate_env.emulator.update(throttle_next_creates=1)
    client = ReplicateClient(max_retries=0, poll_interval=0.02)

    with pytest.raises(Exception, match="429"):
        client.run_model(FLUX, {"prompt": "a"})
    assert stats(replicate_env)["predictions_created"] == 0


# -- waiting, canceling, outputs -------------------------------------------------------


def test_wait_zero_timeout_is_immediate_not_default(
    client: ReplicateClient, replicate_env: Any
) -> None:
    replicate_env.emulator.update(time_scale=1.0)
    prediction = client.create_prediction("kling-ai/kling-video", input_params={"prompt": "x"})

    # With the old bug, timeout=0 meant "the 600 s default": the wait returned the
    # finished prediction instead of raising.
    with pytest.raises(PredictionTimeoutError):
        client.wait_for_prediction(prediction.id, timeout=0)
    client.cancel_prediction(prediction.id)


def test_wait_reports_a_canceled_prediction(client: ReplicateClient, replicate_env: Any) -> None:
    replicate_env.emulator.update(time_scale=1.0)
    prediction = client.create_prediction("kling-ai/kling-video", input_params={"prompt": "x"})
    client.cancel_prediction(prediction)

    with pytest.raises(PredictionCanceledError) as caught:
        client.wait_for_prediction(prediction)
    assert caught.value.prediction.status == "canceled"


def test_file_output_reads_over_the_custom_ca(client: ReplicateClient) -> None:
    output = client.run_model(FLUX, {"prompt": "a", "output_format": "png"})

    assert isinstance(output[0], FileOutput)
    assert output[0].read().startswith(b"\x89PNG")


def test_download_accepts_url_strings_and_lists(client: ReplicateClient, tmp_path: Path) -> None:
    urls = client.run_model("stability-ai/sdxl", {"prompt": "a"}, use_file_output=False)

    single = client.download_output(urls[0], tmp_path / "one.png")
    many = client.download_output(urls, "many/img.png")

    assert single == str(tmp_path / "one.png")
    assert many == [str(tmp_path / "many" / f"img_{i}.png") for i in range(len(urls))]
    assert all(Path(p).stat().st_size > 0 for p in many)


# -- configuration ---------------------------------------------------------------------


def test_env_settings_are_read(replicate_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_MAX_RETRIES", "5")
    monkeypatch.setenv("REPLICATE_TIMEOUT", "0.05")
    client = ReplicateClient(poll_interval=0.01)
    assert client.max_retries == 5
    assert client.timeout == 0.05

    replicate_env.emulator.update(time_scale=1.0)
    with pytest.raises(TimeoutError):
        client.run_model("kling-ai/kling-video", {"prompt": "slow"})

    explicit = ReplicateClient(max_retries=1, timeout=9)
    assert (explicit.max_retries, explicit.timeout) == (1, 9.0)


def test_bad_env_settings_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_MAX_RETRIES", "three")
    with pytest.raises(ConfigError, match="REPLICATE_MAX_RETRIES"):
        ReplicateClient()


def test_api_key_fallback(replicate_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    monkeypatch.setenv("REPLICATE_API_KEY", replicate_env.token)

    assert ReplicateClient(poll_interval=0.02).run_model(FLUX, {"prompt": "a"})


def test_api_token_wins_over_api_key(replicate_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLICATE_API_KEY", "r8_not_the_right_one")

    assert ReplicateClient(poll_interval=0.02).run_model(FLUX, {"prompt": "a"})


def test_singleton_and_reset(replicate_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_replicate_client()
    assert get_replicate_client() is first

    monkeypatch.setenv("REPLICATE_MAX_RETRIES", "7")
    assert get_replicate_client().max_retries == 3  # the shared one keeps its settings
    reset_replicate_client()
    second = get_replicate_client()

    assert second is not first
    assert second.max_retries == 7
    assert get_replicate_client() is second


def test_import_reads_no_environment() -> None:
    """Importing engine creates nothing: the env set after import is what the client uses."""
    script = (
        "import os, engine\n"
        "os.environ['REPLICATE_MAX_RETRIES'] = '9'\n"
        "os.environ['REPLICATE_TIMEOUT'] = '12'\n"
        "c = engine.get_replicate_client()\n"
        "print(c.max_retries, c.timeout)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLICATE_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["9", "12.0"]


# -- token hygiene ---------------------------------------------------------------------


def test_token_never_in_logs_reprs_or_errors(
    replicate_env: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    token = replicate_env.token
    caplog.set_level(logging.DEBUG)
    client = ReplicateClient(api_token=token, poll_interval=0.02)
    texts = [repr(client), str(client)]
    errors: list[BaseException] = []

    with capture_logs() as logs:
        output = client.run_model(FLUX, {"prompt": "a"})
        texts += [repr(output), str(output)]
        client.download_output(output, tmp_path / "x.png")
        prediction = client.create_prediction(FLUX, input_params={"prompt": "b"})
        texts += [repr(prediction), repr(client.wait_for_prediction(prediction))]
        texts += [repr(client.list_predictions())]
        texts += [
            str(e) for e in client.stream_output("meta/meta-llama-3-70b-instruct", {"prompt": "h"})
        ]

        def create_5xx() -> None:
            # 500: replicate's transport does not retry it (503 waits ~50 s per list).
            replicate_env.emulator.update(create_5xx_first=1, list_5xx_rate=1.0, fault_status=500)
            try:
                client.run_model(FLUX, {"prompt": "5xx"})
            finally:
                replicate_env.emulator.update(list_5xx_rate=0.0, fault_status=503)

        for call in (
            lambda: client.run_model("emulator/fails", {"prompt": "x"}),
            lambda: client.run_model(FLUX, {}),
            create_5xx,
            lambda: client.get_prediction("does-not-exist"),
            lambda: client.download_output("https://127.0.0.1:1/nothing.png", tmp_path / "n"),
            lambda: ReplicateClient(api_token=token + "x").run_model(FLUX, {"prompt": "x"}),
        ):
            try:
                call()
            except Exception as exc:
                errors.append(exc)

    assert len(errors) == 6
    for error in errors:
        texts += [str(error), repr(error)]
        cause = error.__cause__
        while cause is not None:
            texts.append(str(cause))
            cause = cause.__cause__
    texts += [repr(entry) for entry in logs]
    texts += [record.getMessage() for record in caplog.records]
    texts.append(caplog.text)

    assert logs  # there was something to search
    leaks = [t for t in texts if token in t]
    assert leaks == []


# -- streaming, event loops, webhooks --------------------------------------------------


def test_stream_can_be_abandoned_early(client: ReplicateClient) -> None:
    stream = client.stream_output("meta/meta-llama-3-70b-instruct", {"prompt": "long"})
    first = next(e for e in stream if e.event == "output" and str(e))
    stream.close()  # type: ignore[attr-defined]  # a generator: closing ends the SSE read

    assert str(first)
    # The client still works afterwards.
    assert client.run_model(FLUX, {"prompt": "after"}, use_file_output=False)


def test_sync_methods_work_inside_a_running_loop(client: ReplicateClient) -> None:
    async def notebook_cell() -> Any:
        return client.run_model(FLUX, {"prompt": "from a notebook"}, use_file_output=False)

    assert asyncio.run(notebook_cell())


def test_seed_webhook_events_are_mapped(client: ReplicateClient, replicate_env: Any) -> None:
    # The seed's own filter ["completed", "failed"]: "failed" is covered by "completed".
    prediction = client.create_prediction(
        FLUX,
        input_params={"prompt": "w"},
        webhook="http://127.0.0.1:9/hook",
        webhook_events_filter=["completed", "failed"],
    )
    assert client.wait_for_prediction(prediction).status == "succeeded"

    with pytest.raises(ConfigError, match="webhook"):
        client.create_prediction(
            FLUX,
            input_params={"prompt": "w"},
            webhook="http://127.0.0.1:9/hook",
            webhook_events_filter=["finished"],
        )
    assert stats(replicate_env)["predictions_created"] == 1
