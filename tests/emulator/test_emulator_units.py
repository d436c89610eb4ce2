"""Pure parts of the emulator: PNGs, videos, ranges, buckets, signatures, config files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from engine.emulator import Emulator, EmulatorConfig, EmulatorServer, __all__
from engine.emulator.catalogue import MODELS, by_version, validate_input
from engine.emulator.config import ModelTiming
from engine.emulator.downloads import parse_range
from engine.emulator.handlers import parse_duration
from engine.emulator.media import iter_video, png_bytes, tokens_for
from engine.emulator.ratelimit import TokenBucket, retry_after_seconds
from engine.emulator.webhooks import new_secret, sign


def test_public_names() -> None:
    assert __all__ == sorted(__all__) == ["Emulator", "EmulatorConfig", "EmulatorServer"]
    assert Emulator
    assert EmulatorServer


def test_png_is_valid_and_prompt_dependent() -> None:
    data = png_bytes("a cat")
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (64, 64)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    assert len(raw) == 64 * (1 + 64 * 3)
    assert png_bytes("a cat") == data != png_bytes("a dog")


def test_video_ranges_concatenate_to_the_whole() -> None:
    size = 200_000
    whole = b"".join(iter_video("pid", size))
    assert len(whole) == size
    assert b"".join(iter_video("pid", size, 70_000, 150_001)) == whole[70_000:150_001]
    assert whole != b"".join(iter_video("other", size))


def test_tokens_start_empty_and_are_deterministic() -> None:
    tokens = tokens_for("hello", 64)
    assert tokens[0] == ""
    assert tokens == tokens_for("hello", 64)
    assert all(t.startswith(" ") for t in tokens[2:-1])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=5-", (5, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=0-999", (0, 100)),
        ("bytes=-1000", (0, 100)),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0", "bytes=100-200"])
def test_parse_range_rejects_unsatisfiable(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 100)


@pytest.mark.parametrize("header", ["items=0-1", "bytes=-", "bytes=5-2", "bytes=0-1,5-6", "junk"])
def test_parse_range_ignores_what_it_does_not_answer(header: str) -> None:
    # RFC 9110 14.2: a server may ignore Range; the whole file is then sent with 200.
    assert parse_range(header, 100) is None


def test_token_bucket_admits_a_burst_then_waits() -> None:
    bucket = TokenBucket(rate_per_min=60, burst=2)
    assert bucket.take(0.0) == bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(1.0)
    assert bucket.take(1.0) == 0.0
    assert retry_after_seconds(0.2) == 1
    assert retry_after_seconds(4.1) == 5


def test_signature_matches_the_replicate_test_vector() -> None:
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        '{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert new_secret().count("_") == 1


def test_validation_reports_every_field() -> None:
    flux = MODELS["black-forest-labs/flux-schnell"]
    problems = validate_input(
        flux, {"num_outputs": 0, "output_format": "gif", "seed": "x", "extra": 1}
    )
    assert {p["type"] for p in problems} == {"required", "number_gte", "enum", "invalid_type"}
    assert validate_input(flux, {"prompt": "x", "num_outputs": 4}) == []
    assert validate_input(flux, {"prompt": "x", "num_outputs": True}) != []


def test_version_lookup_accepts_owner_name_prefix() -> None:
    sdxl = MODELS["stability-ai/sdxl"]
    assert by_version(sdxl.version_id) is sdxl
    assert by_version(f"stability-ai/sdxl:{sdxl.version_id}") is sdxl
    assert by_version(f"other/model:{sdxl.version_id}") is None
    assert len({m.version_id for m in MODELS.values()}) == len(MODELS)


def test_durations() -> None:
    assert parse_duration("1m30s") == 90
    assert parse_duration("500ms") == 0.5
    assert parse_duration("45") == 45
    assert parse_duration("soon") is None


def test_config_from_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "e.yaml"
    yaml_file.write_text(
        "time_scale: 0.5\n"
        "webhook_retry_delays: [0.1]\n"
        "model_timings:\n"
        "  stability-ai/sdxl: {cold_start: 2, run_time: 3}\n"
    )
    config = EmulatorConfig.from_file(yaml_file)
    assert config.webhook_retry_delays == (0.1,)
    assert config.timing("stability-ai/sdxl", ModelTiming()) == ModelTiming(1.0, 1.5)
    json_file = tmp_path / "e.json"
    json_file.write_text('{"low_credit": true}')
    assert EmulatorConfig.from_file(json_file).low_credit is True
    json_file.write_text('{"nope": 1}')
    with pytest.raises(TypeError):
        EmulatorConfig.from_file(json_file)
