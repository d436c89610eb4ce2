"""Model, version and deployment objects in every documented shape, on every code path.

replicate-api.md section 3: ``latest_version`` is a Version object or null;
``current_release`` is absent/null or holds ``version`` as a version id string (the
API, the client's model and the emulator) next to ``model`` as ``owner/name``. The
gateway (validate, dry-run), a run and the client's stream must take each shape, and a
model or deployment that cannot run must say so in one line, never in a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine import ReplicateClient, run_jobs
from engine._config import ApiConfig, Secret
from engine._errors import InvalidRequestError
from engine._gateway import Gateway
from engine._limits import Budget, Limits
from engine._retry import RetryPolicy
from engine.emulator.catalogue import MODELS
from jobs import read_manifest
from jobs.model import ModelRef
from tests.e2e.helpers import cli_env, engine_config, write_jsonl
from tests.support import api_config, tls_server

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
ENGINE = [sys.executable, "-m", "engine"]
FAST = RetryPolicy(attempts=2, timeout=30, wait_initial=0.001, wait_max=0.01)
IMAGE = "https://example.com/photo.png"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [*ENGINE, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
async def gateway(emulator_server: Any) -> AsyncIterator[Gateway]:
    limits = Limits(create=Budget("create", 60_000), read=Budget("read", 60_000))
    async with Gateway(api_config(emulator_server), limits, FAST) as gw:
        yield gw


@pytest.mark.parametrize(
    ("ref", "model"),
    [
        ("black-forest-labs/flux-schnell", "black-forest-labs/flux-schnell"),  # latest_version
        (  # a pinned version
            "stability-ai/sdxl:" + MODELS["stability-ai/sdxl"].version_id,
            "stability-ai/sdxl",
        ),
        ("deployments/emulator/segment", "emulator/segment-anything"),  # version id string
        ("deployments/emulator/flux", "black-forest-labs/flux-schnell"),
    ],
)
async def test_the_version_of_every_reference_shape_is_found(
    gateway: Gateway, ref: str, model: str
) -> None:
    version = await gateway.get_version(ModelRef.parse(ref))

    assert version["id"] == MODELS[model].version_id
    assert "Input" in version["openapi_schema"]["components"]["schemas"]


@pytest.mark.parametrize(
    ("ref", "said"),
    [
        ("emulator/unpublished", "model emulator/unpublished has no published version"),
        ("deployments/emulator/unreleased", "deployment emulator/unreleased has no current"),
    ],
)
async def test_a_model_without_version_or_deployment_without_release_says_so(
    gateway: Gateway, ref: str, said: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await gateway.get_version(ModelRef.parse(ref))

    assert said in str(caught.value)
    assert "\n" not in str(caught.value)


def _version_object(model: str) -> dict[str, Any]:
    return json.loads(json.dumps(MODELS[model].version_json()))  # type: ignore[no-any-return]


@pytest.mark.parametrize("whole", [True, False], ids=["whole-version", "id-only-object"])
async def test_a_release_holding_version_and_model_objects_is_accepted(
    tmp_path: Path, whole: bool
) -> None:
    version = _version_object("emulator/segment-anything")
    release_version = version if whole else {"id": version["id"]}
    deployment = {
        "owner": "acme",
        "name": "objects",
        "current_release": {
            "number": 3,
            "model": {"owner": "emulator", "name": "segment-anything"},
            "version": release_version,
        },
    }
    asked: list[str] = []

    def answer(line: str, _headers: dict[str, str]) -> bytes:
        path = line.split()[1]
        asked.append(path)
        body = json.dumps(deployment if path.startswith("/v1/deployments/") else version)
        return (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
        ).encode()

    with tls_server(tmp_path / "ca.pem", answer) as (base_url, _closed):
        api = ApiConfig(token=Secret("r8_test"), base_url=base_url, ca_file=tmp_path / "ca.pem")
        limits = Limits(create=Budget("create", 60_000), read=Budget("read", 60_000))
        async with Gateway(api, limits, FAST) as gw:
            found = await gw.get_version(ModelRef.parse("deployments/acme/objects"))

    assert found["id"] == version["id"]
    expected = ["/v1/deployments/acme/objects"]
    if not whole:
        expected.append(f"/v1/models/emulator/segment-anything/versions/{version['id']}")
    assert asked == expected


def test_validate_the_shipped_example_with_the_built_in_emulator(tmp_path: Path) -> None:
    result = run_cli(
        "validate", str(ROOT / "manifests" / "example.yaml"), "--emulator", cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert "deployments/emulator/flux" in result.stdout
    assert "ok: nothing was run" in result.stdout


def _deployment_manifest(tmp_path: Path, *names: str) -> Path:
    jobs = {
        "seg": {"model": "deployments/emulator/segment", "input": {"image": IMAGE}},
        "owl": {"model": "deployments/emulator/flux", "input": {"prompt": "an owl"}},
        "unreleased": {"model": "deployments/emulator/unreleased", "input": {"prompt": "x"}},
        "unpublished": {"model": "emulator/unpublished", "input": {"prompt": "x"}},
        "typo": {"model": "black-forest-labs/flux-schnel", "input": {"prompt": "x"}},
    }
    return write_jsonl(tmp_path / "m.jsonl", [{"id": n, **jobs[n]} for n in names])


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]])
def test_validate_and_dry_run_accept_deployments(
    emulator_server: Any, tmp_path: Path, command: list[str]
) -> None:
    manifest = _deployment_manifest(tmp_path, "seg", "owl")

    result = run_cli(*command, str(manifest), cwd=tmp_path, env=cli_env(emulator_server))

    assert result.returncode == 0, result.stderr
    assert "ok: nothing was run" in result.stdout
    assert emulator_server.emulator.stats.snapshot()["predictions_created"] == 0


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]])
def test_what_cannot_run_is_one_line_each_and_exit_2(
    emulator_server: Any, tmp_path: Path, command: list[str]
) -> None:
    manifest = _deployment_manifest(tmp_path, "seg", "unreleased", "unpublished", "typo")

    result = run_cli(*command, str(manifest), cwd=tmp_path, env=cli_env(emulator_server))

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, result.stderr
    assert "deployment emulator/unreleased has no current release" in errors[0]
    assert "model emulator/unpublished has no published version" in errors[1]
    assert "black-forest-labs/flux-schnel" in errors[2]
    assert "could not be found" in errors[2]


async def test_a_run_takes_deployments_and_names_what_cannot_run(
    emulator_server: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manifest = _deployment_manifest(tmp_path, "seg", "owl", "unreleased", "typo")

    summary = await run_jobs(lambda: read_manifest(manifest), engine_config(emulator_server, out))

    assert (summary.done, summary.failed) == (2, 2)
    assert (out / "seg.masks_0.png").is_file()
    assert (out / "owl.png").is_file() or list(out.glob("owl*.webp"))
    errors = dict(summary.common_errors)
    assert any(
        "cannot run deployments/emulator/unreleased" in e and "no current release" in e
        for e in errors
    ), errors
    typo = [e for e in errors if "black-forest-labs/flux-schnel" in e]
    assert len(typo) == 1, errors
    assert "python -m engine validate" in typo[0]
    assert not any("{owner}" in e for e in errors)


def test_the_clients_stream_takes_a_deployment(replicate_env: Any) -> None:
    with ReplicateClient(poll_interval=0.02) as client:
        events = list(client.stream_output("deployments/emulator/llama", {"prompt": "hello"}))
        assert events[-1].event == "done"
        assert "".join(str(e) for e in events)

        with pytest.raises(InvalidRequestError) as caught:
            list(client.stream_output("deployments/emulator/unreleased", {"prompt": "x"}))
    assert "cannot run deployments/emulator/unreleased" in str(caught.value)
    assert "no current release" in str(caught.value)
