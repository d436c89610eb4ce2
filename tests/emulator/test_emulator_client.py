"""Drive the emulator with the unmodified replicate client over HTTPS (sync API)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

from engine.emulator import EmulatorServer
from engine.emulator.catalogue import MODELS
from engine.emulator.media import png_bytes

PNG = b"\x89PNG\r\n\x1a\n"
FLUX = "black-forest-labs/flux-schnell"
SDXL = "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
LLAMA = "meta/meta-llama-3-70b-instruct"


def requests(server: EmulatorServer) -> dict[str, int]:
    counts: dict[str, int] = server.emulator.stats.snapshot()["requests"]
    return counts


def raw_call(
    env: EmulatorServer, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
) -> httpx.Response:
    """Call the emulator's API with plain httpx (no replicate client retries), authorized."""
    return httpx.request(
        method,
        f"{env.base_url}{path}",
        headers={"Authorization": f"Bearer {env.token}", **(headers or {})},
        verify=env.ssl_context(),
        **kw,
    )


def test_sync_run_returns_png_data_uris(client: replicate.Client) -> None:
    outputs = client.run(FLUX, input={"prompt": "a red fox", "num_outputs": 2})
    assert len(outputs) == 2
    assert all(
        isinstance(o, FileOutput) and o.url.startswith("data:image/png;base64,") for o in outputs
    )
    first, second = (o.read() for o in outputs)
    assert first.startswith(PNG)
    assert first != second  # pixels depend on the output index


def test_sync_run_over_data_uri_max_returns_https_urls(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    replicate_env.emulator.update(data_uri_max=0)
    [output] = client.run(FLUX, input={"prompt": "a red fox"})
    assert output.url.startswith(replicate_env.base_url + "/files/")
    assert output.read().startswith(PNG)


def test_polling_run_by_version_reads_files(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    outputs = client.run(SDXL, input={"prompt": "a corgi"}, wait=False)
    [output] = outputs
    assert output.url.startswith("https://127.0.0.1:")
    data = output.read()
    assert data.startswith(PNG)
    assert b"".join(output) == data  # iteration streams the same bytes
    counts = requests(replicate_env)
    assert counts["predictions.create 201"] == 1
    assert counts["versions.get 200"] == 1
    assert counts["predictions.get 200"] >= 1


def test_same_input_gives_same_png_and_different_prompts_differ(client: replicate.Client) -> None:
    [a] = client.run(FLUX, input={"prompt": "same"})
    [b] = client.run(FLUX, input={"prompt": "same"})
    [c] = client.run(FLUX, input={"prompt": "other"})
    assert a.read() == b.read() != c.read()


def test_llm_by_version_is_a_generator_and_by_model_a_list(client: replicate.Client) -> None:
    version = MODELS[LLAMA].version_id
    tokens = list(client.run(f"{LLAMA}:{version}", input={"prompt": "haiku"}, wait=False))
    listed = client.run(LLAMA, input={"prompt": "haiku"})
    assert tokens == listed
    assert listed[0] == ""
    assert "".join(listed).endswith(".")


def test_stream_yields_tokens_then_done(client: replicate.Client) -> None:
    events = list(client.stream(LLAMA, input={"prompt": "haiku"}))
    assert events[-1].event.value == "done"
    assert events[-1].data == "{}"
    text = "".join(e.data for e in events if e.event.value == "output")
    assert text == "".join(client.run(LLAMA, input={"prompt": "haiku"}))
    assert any(e.event.value == "logs" for e in events)
    assert len({e.id for e in events}) == len(events)


def test_stream_of_a_failing_prediction_raises(client: replicate.Client) -> None:
    with pytest.raises(RuntimeError, match="asked this prediction to fail"):
        list(client.stream(LLAMA, input={"prompt": "fail"}))


def test_create_get_cancel_list(client: replicate.Client, replicate_env: EmulatorServer) -> None:
    replicate_env.emulator.update(time_scale=10.0)  # long enough to cancel while running
    prediction = client.predictions.create(model=FLUX, input={"prompt": "slow"})
    assert prediction.status == "starting"
    assert set(prediction.urls) >= {"get", "cancel"}
    assert client.predictions.get(prediction.id).id == prediction.id
    canceled = client.predictions.cancel(prediction.id)
    assert canceled.status == "canceled"
    assert canceled.completed_at is not None
    assert client.predictions.get(prediction.id).status == "canceled"
    replicate_env.emulator.update(time_scale=0.01)
    client.predictions.create(model=FLUX, input={"prompt": "newest"})
    page = client.predictions.list()
    assert [p.input for p in page.results] == [{"prompt": "newest"}, {"prompt": "slow"}]
    assert page.next is None


def test_failed_model_raises_model_error(client: replicate.Client) -> None:
    with pytest.raises(ModelError) as info:
        client.run("emulator/fails", input={"prompt": "x"}, wait=False)
    assert info.value.prediction.status == "failed"
    assert "always fails" in str(info.value)


def test_wrong_token_is_401_problem(replicate_env: EmulatorServer) -> None:
    c = replicate.Client(api_token="r8_wrong")
    with c._client, pytest.raises(ReplicateError) as info:
        c.run(FLUX, input={"prompt": "x"})
    assert info.value.status == 401
    assert info.value.title == "Unauthenticated"
    assert info.value.detail == "You did not pass a valid authentication token"


def test_invalid_input_is_422_before_any_prediction(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    with pytest.raises(ReplicateError) as info:
        client.run(FLUX, input={"num_outputs": 9})
    assert info.value.status == 422
    assert info.value.title == "Input validation failed"
    assert "prompt is required" in (info.value.detail or "")
    assert replicate_env.emulator.stats.predictions_created == 0
    raw = raw_call(
        replicate_env,
        "POST",
        f"/v1/models/{FLUX}/predictions",
        json={"input": {"prompt": "x", "output_format": "gif"}},
    )
    assert raw.headers["content-type"] == "application/problem+json"
    assert raw.json()["invalid_fields"][0]["field"] == "input.output_format"


def test_unknown_version_is_422(client: replicate.Client) -> None:
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(version="0" * 64, input={"prompt": "x"})
    assert info.value.status == 422
    assert info.value.title == "Invalid version or not permitted"


def test_429_on_create_with_retry_after(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    replicate_env.emulator.update(throttle_next_creates=1)
    raw = raw_call(
        replicate_env, "POST", f"/v1/models/{FLUX}/predictions", json={"input": {"prompt": "x"}}
    )
    assert raw.status_code == 429
    assert raw.headers["retry-after"] == "1"
    assert raw.json()["retry_after"] == 1
    assert raw.json()["detail"].startswith("Request was throttled.")
    replicate_env.emulator.update(throttle_next_creates=1)
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model=FLUX, input={"prompt": "x"})
    assert info.value.status == 429
    assert client.predictions.create(model=FLUX, input={"prompt": "x"}).status == "starting"
    assert replicate_env.emulator.stats.throttled == 2


def test_throttled_list_calls_answer_429_and_then_recover(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    replicate_env.emulator.update(throttle_next_lists=2)
    raw = raw_call(replicate_env, "GET", "/v1/predictions")
    assert (raw.status_code, raw.headers["retry-after"]) == (429, "1")
    # The replicate client retries a throttled GET itself: the second 429 is waited out.
    assert client.predictions.list().results == []
    assert replicate_env.emulator.stats.throttled == 2


def test_low_credit_bucket_uses_the_real_wording(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    replicate_env.emulator.update(low_credit=True)
    client.predictions.create(model=FLUX, input={"prompt": "one"})
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model=FLUX, input={"prompt": "two"})
    assert info.value.status == 429
    assert "reduced to 6 requests per minute with a burst of 1" in (info.value.detail or "")


def test_models_versions_account_hardware_secret(client: replicate.Client) -> None:
    model = client.models.get(FLUX)
    assert model.owner == "black-forest-labs"
    assert model.latest_version is not None
    version = client.models.get("stability-ai/sdxl").versions.get(SDXL.split(":")[1])
    assert version.openapi_schema["components"]["schemas"]["Input"]["required"] == ["prompt"]
    llama = client.models.get(LLAMA).versions.list()
    assert (
        llama.results[0].openapi_schema["components"]["schemas"]["Output"]["x-cog-array-type"]
        == "iterator"
    )
    assert client.accounts.current().username == "emulator"
    assert {h.sku for h in client.hardware.list()} >= {"cpu"}
    secret = client.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    assert len(secret.key.split("_")) == 2


def test_file_upload_round_trip(
    client: replicate.Client, replicate_env: EmulatorServer, tmp_path: Path
) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(png_bytes("input"))
    created = client.files.create(image, metadata={"k": "v"})
    assert created.name == "in.png"
    assert created.content_type == "image/png"
    assert created.size == image.stat().st_size
    assert created.metadata == {"k": "v"}
    assert client.files.get(created.id).checksums == created.checksums
    assert [f.id for f in client.files.list()] == [created.id]
    # A Path input is uploaded by the client and its urls.get lands in the input.
    prediction = client.predictions.create(
        model=FLUX, input={"prompt": "x", "image": io.BytesIO(b"abc")}
    )
    url = prediction.input["image"]
    assert url.startswith(replicate_env.base_url + "/v1/files/")
    headers = {"Authorization": f"Bearer {replicate_env.token}"}
    got = httpx.get(url + "/download", headers=headers, verify=replicate_env.ssl_context())
    assert got.content == b"abc"
    client.files.delete(created.id)
    with pytest.raises(ReplicateError) as info:
        client.files.get(created.id)
    assert info.value.status == 404


def test_deployment_predictions(client: replicate.Client) -> None:
    prediction = client.deployments.predictions.create("emulator/flux", input={"prompt": "x"})
    prediction.wait()
    assert prediction.status == "succeeded"
    assert prediction.model == FLUX


def test_fail_first_per_input_then_succeed(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    replicate_env.emulator.update(fail_first_per_input=2)
    for _ in range(2):
        with pytest.raises(ModelError, match="CUDA out of memory"):
            client.run(FLUX, input={"prompt": "retry me"})
    [output] = client.run(FLUX, input={"prompt": "retry me"})
    assert output.read().startswith(PNG)
    with pytest.raises(ModelError):  # every distinct input fails its first N times
        client.run(FLUX, input={"prompt": "another"}, wait=False)
    dupes = replicate_env.emulator.stats.duplicates()
    assert dupes == {f'{FLUX} {{"prompt":"retry me"}}': 3}


def test_prediction_json_shape(replicate_env: EmulatorServer) -> None:
    raw = raw_call(
        replicate_env,
        "POST",
        f"/v1/models/{LLAMA}/predictions",
        json={"input": {"prompt": "x"}},
        headers={"Prefer": "wait=5"},
    )
    assert raw.status_code == 201
    assert raw.headers["preference-applied"] == "wait=5"
    assert int(raw.headers["ratelimit-remaining"]) > 0
    body = raw.json()
    assert len(body["id"]) == 26
    assert body["status"] == "succeeded"
    assert body["created_at"].endswith("Z")
    assert body["metrics"]["predict_time"] > 0
    assert body["urls"]["stream"].startswith(replicate_env.base_url)
    assert "100%|" in body["logs"]
    assert base64  # imported for data-URI helpers in other tests
