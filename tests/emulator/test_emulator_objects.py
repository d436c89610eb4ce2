"""Model, version and deployment objects in each shape replicate-api.md section 3 allows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError

from engine.emulator import EmulatorServer
from engine.emulator.catalogue import MODELS

FLUX = "black-forest-labs/flux-schnell"
HEX = frozenset("0123456789abcdef")


@pytest.fixture
def http(replicate_env: EmulatorServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {replicate_env.token}"}
    with httpx.Client(
        headers=headers, verify=replicate_env.ssl_context(), base_url=replicate_env.base_url
    ) as c:
        yield c


def get(http: httpx.Client, path: str) -> dict[str, Any]:
    answer = http.get(path)
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()
    return data


def test_model_with_a_version_has_latest_version_as_an_object(
    client: replicate.Client, http: httpx.Client
) -> None:
    raw = get(http, f"/v1/models/{FLUX}")
    assert {"url", "owner", "name", "visibility", "run_count"} <= set(raw)
    assert raw["visibility"] in {"public", "private"}
    assert isinstance(raw["run_count"], int)
    assert set(raw["latest_version"]) >= {"id", "created_at", "cog_version", "openapi_schema"}
    model = client.models.get(FLUX)
    assert model.latest_version is not None
    assert model.latest_version.id == MODELS[FLUX].version_id
    assert len(model.latest_version.id) == 64
    assert set(model.latest_version.id) <= HEX


def test_model_without_a_version_has_latest_version_null(
    client: replicate.Client, http: httpx.Client
) -> None:
    assert get(http, "/v1/models/emulator/unpublished")["latest_version"] is None
    model = client.models.get("emulator/unpublished")
    assert model.latest_version is None
    assert model.versions.list().results == []
    with pytest.raises(ReplicateError) as caught:
        client.models.predictions.create("emulator/unpublished", input={"prompt": "x"})
    assert caught.value.status == 404


def test_version_list_and_get_agree(client: replicate.Client) -> None:
    model = client.models.get("stability-ai/sdxl")
    [listed] = model.versions.list().results
    got = model.versions.get(listed.id)
    assert got.id == listed.id
    assert got.openapi_schema == listed.openapi_schema
    assert got.cog_version


def test_deployment_release_version_is_a_version_id_string(
    client: replicate.Client, http: httpx.Client
) -> None:
    raw = get(http, "/v1/deployments/emulator/flux")
    release = raw["current_release"]
    assert isinstance(release["version"], str)
    assert release["version"] == MODELS[FLUX].version_id
    assert release["model"] == FLUX
    assert isinstance(release["number"], int)
    assert set(release["created_by"]) >= {"type", "username", "name"}
    assert set(release["configuration"]) == {"hardware", "min_instances", "max_instances"}
    deployment = client.deployments.get("emulator/flux")
    assert deployment.current_release is not None
    assert deployment.current_release.version == MODELS[FLUX].version_id
    prediction = client.deployments.predictions.create(
        "emulator/segment", input={"image": "https://example.com/a.png"}
    )
    assert prediction.model == "emulator/segment-anything"
    assert prediction.version == MODELS["emulator/segment-anything"].version_id


def test_deployment_without_a_release(client: replicate.Client) -> None:
    deployment = client.deployments.get("emulator/unreleased")
    assert deployment.current_release is None
    with pytest.raises(ReplicateError) as caught:
        client.deployments.predictions.create("emulator/unreleased", input={"prompt": "x"})
    assert caught.value.status == 404
    names = {f"{d.owner}/{d.name}" for d in client.deployments.list()}
    assert {"emulator/flux", "emulator/unreleased"} <= names


def test_prediction_objects_keep_the_contract(http: httpx.Client) -> None:
    created = http.post(f"/v1/models/{FLUX}/predictions", json={"input": {"prompt": "x"}})
    body = created.json()
    assert created.status_code == 201
    assert body["version"]
    assert body["logs"] == ""
    assert body["error"] is None
    assert body["source"] == "api"
    assert None not in body["urls"].values()
    assert "stream" not in body["urls"]  # flux does not stream: the key is omitted
