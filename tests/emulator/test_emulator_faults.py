"""Account and network faults: 402 for credit, creates that hang, predictions from the web."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError

from engine.emulator import EmulatorConfig, EmulatorServer

FLUX = "black-forest-labs/flux-schnell"
CREDIT = (
    "You have insufficient credit to run this model. "
    "Go to https://replicate.com/account/billing#billing to purchase credit."
)


@pytest.fixture
def http(replicate_env: EmulatorServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {replicate_env.token}"}
    with httpx.Client(
        headers=headers, verify=replicate_env.ssl_context(), base_url=replicate_env.base_url
    ) as c:
        yield c


def test_insufficient_credit_answers_402_and_stores_nothing(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    replicate_env.emulator.update(insufficient_credit=True)
    with pytest.raises(ReplicateError) as caught:
        client.predictions.create(model=FLUX, input={"prompt": "x"})
    assert caught.value.status == 402
    assert caught.value.detail == CREDIT
    assert list(client.predictions.list()) == []
    replicate_env.emulator.update(insufficient_credit=False)  # credit bought
    client.predictions.create(model=FLUX, input={"prompt": "x"})
    stats = replicate_env.emulator.stats.snapshot()
    assert stats["creates_402"] == 1
    assert stats["creates_by_model"] == {FLUX: 1}


def test_hung_create_is_never_answered_until_the_client_gives_up(
    replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    replicate_env.emulator.update(hang_creates=1)
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"/v1/models/{FLUX}/predictions", json={"input": {"prompt": "x"}}, timeout=0.2)
    answered = http.post(f"/v1/models/{FLUX}/predictions", json={"input": {"prompt": "x"}})
    assert answered.status_code == 201  # only the next N hang
    stats = replicate_env.emulator.stats.snapshot()
    assert stats["hung_creates"] == 1
    assert stats["predictions_created"] == 1


def test_hung_create_ends_after_hang_seconds_with_504(
    replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    replicate_env.emulator.update(hang_creates=1, hang_seconds=0.05)
    answer = http.post(f"/v1/models/{FLUX}/predictions", json={"input": {"prompt": "x"}})
    assert answer.status_code == 504
    assert replicate_env.emulator.stats.snapshot()["predictions_created"] == 0


def test_hung_create_after_store_leaves_a_prediction_to_find(
    client: replicate.Client, replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    replicate_env.emulator.update(hang_creates=1, hang_after_store=True)
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"/v1/models/{FLUX}/predictions", json={"input": {"prompt": "lost"}}, timeout=0.2)
    [orphan] = client.predictions.list().results
    assert orphan.input == {"prompt": "lost"}
    stats = replicate_env.emulator.stats.snapshot()
    assert stats["hung_creates"] == 1
    assert stats["creates_by_model"] == {FLUX: 1}


def test_server_shuts_down_while_a_create_hangs(tmp_path: Path) -> None:
    config = EmulatorConfig(hang_creates=1, hang_seconds=600.0)
    errors: list[BaseException] = []
    with EmulatorServer(config, ca_file=tmp_path / "ca.pem") as server:
        headers = {"Authorization": f"Bearer {server.token}"}

        def create() -> None:
            with httpx.Client(verify=server.ssl_context(), headers=headers) as c:
                try:
                    c.post(f"{server.base_url}/v1/predictions", json={}, timeout=60)
                except httpx.HTTPError as exc:
                    errors.append(exc)

        caller = threading.Thread(target=create)
        caller.start()
        while server.emulator.stats.hung_creates == 0 and caller.is_alive():
            time.sleep(0.005)
        assert server.emulator.stats.hung_creates == 1
    caller.join()
    assert len(errors) == 1  # the connection was dropped at shutdown, not answered


def test_foreign_predictions_appear_in_the_list_as_web(
    client: replicate.Client, replicate_env: EmulatorServer
) -> None:
    replicate_env.emulator.update(foreign_predictions=3)
    mine = client.predictions.create(model=FLUX, input={"prompt": "mine"})
    page = client.predictions.list()
    assert len(page.results) == 4
    assert page.results[0].id == mine.id  # newest first
    listed = client._client.get("/v1/predictions").json()["results"]
    assert [p["source"] for p in listed] == ["api", "web", "web", "web"]
    web = listed[1:]
    assert all(p["model"] != FLUX or p["input"] != mine.input for p in web)
    assert len({p["model"] for p in web}) == 3
    assert client.predictions.get(web[0]["id"]).id == web[0]["id"]
    stats = replicate_env.emulator.stats.snapshot()
    assert stats["foreign_predictions"] == 3
    assert stats["predictions_created"] == 1


def test_list_pages_do_not_shift_while_predictions_arrive(
    client: replicate.Client, replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    replicate_env.emulator.update(foreign_predictions=250)
    first = http.get("/v1/predictions").json()
    assert len(first["results"]) == 100
    created = [p["created_at"] for p in first["results"]]
    assert created == sorted(created, reverse=True)
    replicate_env.emulator.update(foreign_predictions=7)  # others keep creating meanwhile
    client.predictions.create(model=FLUX, input={"prompt": "late"})
    second = http.get(first["next"]).json()
    third = http.get(second["next"]).json()
    assert third["next"] is None
    ids = [p["id"] for page in (first, second, third) for p in page["results"]]
    assert len(ids) == len(set(ids)) == 250
    newest = http.get("/v1/predictions").json()["results"]
    assert newest[0]["input"] == {"prompt": "late"}
    assert [p["source"] for p in newest[:8]] == ["api"] + ["web"] * 7


def test_list_filters_by_creation_time_and_keeps_the_filter_in_next(
    client: replicate.Client, replicate_env: EmulatorServer, http: httpx.Client
) -> None:
    replicate_env.emulator.update(foreign_predictions=120)
    middle = http.get("/v1/predictions").json()["results"][10]["created_at"]
    after = http.get("/v1/predictions", params={"created_after": middle}).json()
    assert len(after["results"]) == 10
    assert after["next"] is None
    before = http.get("/v1/predictions", params={"created_before": middle}).json()
    assert len(before["results"]) == 100
    assert "created_before=" in before["next"]
    rest = http.get(before["next"]).json()
    assert len(rest["results"]) == 9
    assert all(p["created_at"] < middle for p in rest["results"])
    assert http.get("/v1/predictions", params={"created_after": "yesterday"}).status_code == 400
