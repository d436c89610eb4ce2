"""--embed-metadata: prompt and parameters inside image files, read by Pillow and exiftool."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from engine import read_manifest, run_jobs
from engine._metadata import IMAGES_EXTRA_HINT, embed_metadata, image_fields
from tests.e2e.helpers import FLUX, SDXL, engine_config, journal_records, write_jsonl
from tests.support import sha256_of

FIELDS = image_fields(
    {
        "prompt": "a red fox, in snow",
        "seed": 7,
        "negative_prompt": "blurry",
        "width": 64,
        "height": 48,
        "num_inference_steps": 4,
    },
    model=SDXL,
    version="39ed52f2",
    prediction_id="abc123",
)


@pytest.mark.anyio
async def test_png_outputs_carry_their_prompt_and_the_hash_after_embedding(
    emulator_server, tmp_path
):
    manifest = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "fox", "model": FLUX, "input": {"prompt": "a fox, at dawn", "seed": 7}},
            {"id": "kanji", "model": SDXL, "input": {"prompt": "富士山の朝焼け", "num_outputs": 2}},
        ],
    )
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, embed_metadata=True)
    summary = await run_jobs(lambda: read_manifest(manifest), config)
    assert summary.done == 2

    files = {r["n"]: r for r in journal_records(config.journal_path) if r["e"] == "file"}
    assert len(files) == 3
    for name, record in files.items():
        path = out / name
        assert record["sha"] == sha256_of(path)  # recorded after embedding
        assert record["sz"] == path.stat().st_size
        sidecar = json.loads(
            (out / f"{name.split('.')[0].rsplit('_', 1)[0]}.info.json").read_text()
        )
        assert {f["name"]: f["sha256"] for f in sidecar["files"]}[name] == record["sha"]
        with Image.open(path) as image:
            image.load()
            text = dict(image.text)  # type: ignore[attr-defined]
        assert text["replicate:prediction"] == record["p"] == sidecar["prediction_id"]
        assert text["replicate:version"] == sidecar["version"]
        assert text["Software"] == "replicate-batch-engine"
        assert json.loads(text["replicate:input"]) == sidecar["input"]
        prompt, settings = text["parameters"].split("\n")
        assert prompt == sidecar["input"]["prompt"] == text["Description"]
        assert f"Replicate prediction: {record['p']}" in settings
    with Image.open(out / "fox.png") as image:
        image.load()
        assert "Seed: 7" in image.text["parameters"]  # type: ignore[attr-defined]
        assert f"Model: {FLUX}," in image.text["parameters"]  # type: ignore[attr-defined]


def _png(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.new("RGB", (32, 24), (10, 200, 30)).save(path, pnginfo=None)
    return path


def test_png_embedding_keeps_pixels_and_replaces_its_own_chunks(tmp_path):
    path = _png(tmp_path)
    with Image.open(path) as image:
        pixels = image.tobytes()
    first = embed_metadata(path, FIELDS)
    second = embed_metadata(path, FIELDS)
    assert first == second  # a second pass replaces, never piles up
    assert first == (path.stat().st_size, sha256_of(path))
    with Image.open(path) as image:
        assert image.tobytes() == pixels
        text = dict(image.text)  # type: ignore[attr-defined]
    assert text["parameters"] == FIELDS["parameters"]
    assert text["parameters"].splitlines() == [
        "a red fox, in snow",
        "Negative prompt: blurry",
        "Steps: 4, Seed: 7, Size: 64x48, Model: stability-ai/sdxl, Version: 39ed52f2, "
        "Replicate prediction: abc123",
    ]


@pytest.mark.parametrize(
    ("fmt", "options", "mode"),
    [
        ("JPEG", {"quality": 80}, "RGB"),
        ("WEBP", {"quality": 70}, "RGB"),
        ("WEBP", {"lossless": True}, "RGBA"),
    ],
)
def test_jpeg_and_webp_get_exif_without_re_encoding(tmp_path, fmt, options, mode):
    path = tmp_path / f"a.{fmt.lower()}"
    image = Image.new(mode, (40, 30), (200, 30, 90, 128)[: len(mode)])
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"  # an existing tag survives
    image.save(path, fmt, exif=exif.tobytes(), **options)
    with Image.open(path) as before:
        pixels = before.tobytes()
    size, sha = embed_metadata(path, FIELDS) or (0, "")
    assert (size, sha) == (path.stat().st_size, sha256_of(path))
    with Image.open(path) as after:
        assert after.format == fmt
        assert after.tobytes() == pixels  # the compressed data was copied, not re-encoded
        read = after.getexif()
    assert read[0x010E] == "a red fox, in snow"
    assert read[0x010F] == "Camera maker"
    comment = read.get_ifd(0x8769)[0x9286]
    assert comment[:8] == b"UNICODE\0"
    assert comment[8:].decode("utf-16-be") == FIELDS["parameters"]


def test_jpeg_without_the_images_extra_says_how_to_get_it(tmp_path):
    jpeg, png = tmp_path / "a.jpg", _png(tmp_path)
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG")
    script = (
        "import sys; sys.modules['PIL'] = None\n"  # as if Pillow were not installed
        "from pathlib import Path\n"
        "from engine._metadata import embed_metadata, ImagesExtraMissingError\n"
        "fields = {'parameters': 'p', 'Description': 'p'}\n"
        f"print(embed_metadata(Path({str(png)!r}), fields) is not None)\n"
        "try:\n"
        f"    embed_metadata(Path({str(jpeg)!r}), fields)\n"
        "except ImagesExtraMissingError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.splitlines() == ["True", IMAGES_EXTRA_HINT]
    with Image.open(io.BytesIO(jpeg.read_bytes())) as image:
        assert 0x010E not in image.getexif()  # left as it was


@pytest.mark.parametrize(
    ("fmt", "tag"), [("PNG", "Parameters"), ("JPEG", "UserComment"), ("WEBP", "UserComment")]
)
def test_exiftool_reads_the_prompt_and_parameters(tmp_path, fmt, tag):
    # exiftool is Debian's libimage-exiftool-perl (.ci/run installs it): missing, this fails.
    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (32, 24), (10, 200, 30)).save(path, fmt)
    embed_metadata(path, FIELDS)
    shown = subprocess.run(
        ["exiftool", "-json", str(path)], capture_output=True, text=True, check=True, timeout=60
    )
    [tags] = json.loads(shown.stdout)
    assert tags[tag] == FIELDS["parameters"]  # what A1111's "PNG info" shows, in full
    assert tags.get("Description", tags.get("ImageDescription")) == "a red fox, in snow"
    assert tags["Software"] == "replicate-batch-engine"
