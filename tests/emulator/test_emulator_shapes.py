"""Structured outputs: file URLs inside objects and lists, data URIs at any depth when sync."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import replicate
from replicate.helpers import FileOutput

from engine.emulator import EmulatorServer

PNG = b"\x89PNG\r\n\x1a\n"
IMAGE = "https://example.com/cat.png"
CAPTIONER = "emulator/captioner"
VIDEO_THUMB = "emulator/video-thumbnail"
SEGMENT = "emulator/segment-anything"
DETECT = "emulator/detect-objects"
MULTIVIEW = "emulator/multiview"


@pytest.fixture
def http(replicate_env: EmulatorServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {replicate_env.token}"}
    with httpx.Client(headers=headers, verify=replicate_env.ssl_context()) as c:
        yield c


def polled(client: replicate.Client, model: str, data: dict[str, Any]) -> Any:
    prediction = client.predictions.create(model=model, input=data)
    prediction.wait()
    assert prediction.status == "succeeded"
    return prediction.output


def urls(value: Any) -> list[str]:
    """Return every string under ``value`` that the client would wrap as a file."""
    if isinstance(value, str):
        return [value] if value.startswith(("https:", "data:")) else []
    if isinstance(value, list):
        return [u for v in value for u in urls(v)]
    if isinstance(value, dict):
        return [u for v in value.values() for u in urls(v)]
    return []


def decode(data_uri: str) -> bytes:
    header, _, payload = data_uri.partition(",")
    assert header == "data:image/png;base64"
    return base64.b64decode(payload)


def test_captioner_object_holds_a_caption_and_an_image_url(
    client: replicate.Client, replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    output = polled(client, CAPTIONER, {"image": IMAGE})
    assert set(output) == {"caption", "image"}
    assert isinstance(output["caption"], str)
    assert output["caption"]
    assert output["image"].startswith(f"{replicate_env.base_url}/files/")
    answer = http.get(output["image"])
    assert answer.headers["content-type"] == "image/png"
    assert answer.content.startswith(PNG)
    # The sync path inlines the same image; the client wraps it inside the dict.
    ran = client.run(CAPTIONER, input={"image": IMAGE})
    assert ran["caption"] == output["caption"]
    assert isinstance(ran["image"], FileOutput)
    assert ran["image"].url.startswith("data:image/png")
    assert ran["image"].read() == answer.content


def test_video_with_thumbnail_keeps_the_video_a_url_when_sync(
    client: replicate.Client, replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    replicate_env.emulator.update(video_size=100_000)
    output = polled(client, VIDEO_THUMB, {"prompt": "waves"})
    assert set(output) == {"video", "thumbnail"}
    video = http.get(output["video"])
    assert video.headers["content-type"] == "video/mp4"
    assert len(video.content) == 100_000
    assert video.content[4:8] == b"ftyp"
    assert http.get(output["thumbnail"]).content.startswith(PNG)
    ran = client.run(VIDEO_THUMB, input={"prompt": "waves"})
    assert ran["video"].url.startswith("https://")
    assert ran["thumbnail"].url.startswith("data:image/png")
    assert ran["thumbnail"].read().startswith(PNG)


def test_segmentation_masks_boxes_labels(
    client: replicate.Client, http: httpx.Client, replicate_env: EmulatorServer
) -> None:
    output = polled(client, SEGMENT, {"image": IMAGE, "max_masks": 4})
    assert set(output) == {"masks", "boxes", "labels", "scores"}
    assert len(output["masks"]) == len(output["boxes"]) == len(output["labels"]) == 4
    assert all(len(box) == 4 and all(isinstance(v, int) for v in box) for box in output["boxes"])
    assert all(isinstance(label, str) for label in output["labels"])
    assert all(0 < score <= 1 for score in output["scores"])
    masks = [http.get(url).content for url in output["masks"]]
    assert all(m.startswith(PNG) for m in masks)
    assert len(set(masks)) == 4  # one picture per mask
    ran = client.run(SEGMENT, input={"image": IMAGE, "max_masks": 4})
    assert [m.read() for m in ran["masks"]] == masks
    assert ran["boxes"] == output["boxes"]
    counts = replicate_env.emulator.stats.snapshot()["creates_by_model"]
    assert counts == {SEGMENT: 2}


def test_detection_is_a_list_of_objects_each_with_a_mask(
    client: replicate.Client, http: httpx.Client
) -> None:
    output = polled(client, DETECT, {"image": IMAGE, "max_objects": 3})
    assert isinstance(output, list)
    assert len(output) == 3
    for item in output:
        assert set(item) == {"mask", "label", "score", "box"}
        assert http.get(item["mask"]).content.startswith(PNG)
    ran = client.run(DETECT, input={"image": IMAGE, "max_objects": 3})
    assert [i["label"] for i in ran] == [i["label"] for i in output]
    assert all(isinstance(i["mask"], FileOutput) for i in ran)


def test_multiview_nests_objects_in_lists_in_objects(
    client: replicate.Client, http: httpx.Client, replicate_env: EmulatorServer
) -> None:
    output = polled(client, MULTIVIEW, {"prompt": "a teapot", "num_views": 3})
    assert set(output) == {"preview", "views", "meta"}
    assert [v["angle"] for v in output["views"]] == [0, 120, 240]
    depth_map = output["views"][2]["depth"]["map"]
    assert depth_map.startswith(f"{replicate_env.base_url}/files/")
    found = urls(output)
    assert len(found) == 1 + 2 * 3 == len(set(found))
    assert all(http.get(u).content.startswith(PNG) for u in found)
    # Sync: every file at every depth is a data: URI, same bytes as the download.
    response = http.post(
        f"{replicate_env.base_url}/v1/models/{MULTIVIEW}/predictions",
        json={"input": {"prompt": "a teapot", "num_views": 3}},
        headers={"Prefer": "wait"},
    )
    inline = response.json()["output"]
    assert all(u.startswith("data:image/png;base64,") for u in urls(inline))
    assert decode(inline["views"][2]["depth"]["map"]) == http.get(depth_map).content
    assert inline["views"][2]["depth"]["range"] == [0.1, 10.0]


def test_sync_outputs_over_the_limit_stay_urls_at_every_depth(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    replicate_env.emulator.update(data_uri_max=0)
    ran = client.run(DETECT, input={"image": IMAGE})
    assert all(item["mask"].url.startswith("https://") for item in ran)


def test_structured_files_expire_with_the_output(
    client: replicate.Client, replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    output = polled(client, SEGMENT, {"image": IMAGE})
    assert all(http.get(u).status_code == 200 for u in output["masks"])
    replicate_env.emulator.update(output_expiry=0.0)  # an hour passes
    assert all(http.get(u).status_code == 404 for u in output["masks"])
    stats = replicate_env.emulator.stats.snapshot()
    assert stats["downloads_by_status"] == {"200": 3, "404": 3}


def test_new_models_publish_object_output_schemas(client: replicate.Client) -> None:
    for ref in (CAPTIONER, VIDEO_THUMB, SEGMENT, MULTIVIEW):
        version = client.models.get(ref).latest_version
        assert version is not None
        output = version.openapi_schema["components"]["schemas"]["Output"]
        assert output["type"] == "object"
    detect = client.models.get(DETECT).latest_version
    assert detect is not None
    output = detect.openapi_schema["components"]["schemas"]["Output"]
    assert output["type"] == "array"
    assert output["items"]["properties"]["mask"]["format"] == "uri"
