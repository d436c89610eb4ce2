"""The gallery: written after a run, rendered by headless Chromium from disk, escaped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from engine import read_manifest, run_jobs
from engine._gallery import write_gallery
from engine._journal import JobState, Replay
from engine.cli import main
from jobs import Job, JobStatus, ModelRef, OutputFile
from tests.e2e.browser import dump_dom, screenshot
from tests.e2e.helpers import FAILS, FLUX, LLAMA, VIDEO, engine_config, write_jsonl

pytestmark = pytest.mark.anyio

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
ARTEFACTS = Path(__file__).resolve().parents[2] / "tests" / "artefacts"


class Cards(HTMLParser):
    """Collect the rendered cards: key, status, model, files, caption and error text."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, dict[str, Any]] = {}
        self.title = ""
        self.where: list[str] = []
        self._card: dict[str, Any] | None = None
        self._text: str | None = None
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "title":
            self._in_title = True
        if tag == "figure" and a.get("data-key"):
            self._card = {"status": a["data-status"], "model": a["data-model"], "files": []}
            self._card.update(caption="", error="")
            self.cards[str(a["data-key"])] = self._card
        if self._card is not None and a.get("data-file"):
            self._card["files"].append(a["data-file"])
        cls = a.get("class") or ""
        if self._card is not None and tag == "p" and cls in ("caption", "error"):
            self._text = cls
        if tag == "span" and cls == "where":
            self._text = "where"

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in ("p", "span"):
            self._text = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._text == "where":
            self.where.append(data)
        elif self._text is not None and self._card is not None:
            self._card[self._text] += data


def rendered(url: str, profile: Path) -> Cards:
    cards = Cards()
    cards.feed(dump_dom(url, profile))
    return cards


async def test_gallery_of_a_run_renders_every_output_and_failure(emulator_server, tmp_path):
    manifest = write_jsonl(
        tmp_path / "night.jsonl",
        [
            {"id": "cats", "model": FLUX, "input": {"prompt": "two cats", "num_outputs": 2}},
            {"id": "hostile", "model": FLUX, "input": {"prompt": HOSTILE}},
            {"id": "haiku", "model": LLAMA, "input": {"prompt": "a haiku about llamas"}},
            {"id": "waves", "model": VIDEO, "input": {"prompt": "slow waves"}},
            {"id": "poster", "model": "emulator/video-thumbnail", "input": {"prompt": "a film"}},
            {"id": "broken", "model": FAILS, "input": {"prompt": "this one fails"}},
            {"id": "odd", "model": FLUX, "input": {"prompt": "odd"}, "output": "a b/{id} #name%"},
        ],
    )
    out = tmp_path / "out"
    config = engine_config(emulator_server, out, prediction_retries=0)
    summary = await run_jobs(lambda: read_manifest(manifest), config)
    assert (summary.done, summary.failed) == (6, 1)

    # The command writes it from the journal and sidecars alone (no network).
    code = main(["gallery", str(manifest), "--output-dir", str(out)])
    assert code == 0
    page = out / "index.html"
    html = page.read_text()
    assert "<script>document.title" not in html  # escaped in the JSON, not only in the DOM
    for remote in ("<script src", "<link", "@import", "url("):  # no CDN: self-contained
        assert remote not in html

    cards = rendered(page.as_uri(), tmp_path / "profile")

    journal = [json.loads(line) for line in config.journal_path.read_text().splitlines()]
    files = {r["n"] for r in journal if r["e"] == "file"}
    shown = {f for card in cards.cards.values() for f in card["files"]}
    assert shown == files
    assert set(cards.cards) == {
        "cats",
        "hostile",
        "haiku",
        "waves",
        "poster",
        "broken",
        "odd",
    }
    assert cards.cards["cats"]["caption"] == "two cats"
    assert len(cards.cards["cats"]["files"]) == 2
    assert cards.cards["hostile"]["caption"] == HOSTILE  # shown as text, not run
    assert cards.title == "night.jsonl"
    assert cards.cards["broken"]["status"] == "failed"
    assert "ModelError" in cards.cards["broken"]["error"]
    assert cards.cards["waves"]["model"] == VIDEO
    assert {c["status"] for k, c in cards.cards.items() if k != "broken"} == {"done"}

    dom = dump_dom(page.as_uri(), tmp_path / "profile")
    assert "<video" in dom
    sources = re.findall(r'(?:src|poster)="([^"]*)"', dom)
    assert sources
    assert all(not re.match(r"^[a-z]+:|^/", src) for src in sources), sources  # relative
    assert 'loading="lazy"' in dom
    # Relative and encoded: the folder can be copied or served.
    (odd,) = cards.cards["odd"]["files"]
    assert odd.startswith("a b/odd #name%.")
    assert re.search(r'<img src="a%20b/odd%20%23name%25\.\w+"', dom)

    # Filters are in the URL: failures only.
    failed = rendered(page.as_uri() + "#status=failed", tmp_path / "profile")
    assert set(failed.cards) == {"broken"}

    shot = screenshot(page.as_uri(), tmp_path / "profile", tmp_path / "gallery.png")
    ARTEFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTEFACTS / "gallery-run.png")
    assert shot.stat().st_size > 10_000  # something was drawn


def test_five_thousand_entries_stay_small_and_page(tmp_path):
    model = ModelRef.parse(FLUX)
    jobs = [
        Job(f"j{i:05d}", model, {"prompt": f"prompt number {i}"}, f"img/j{i:05d}")
        for i in range(5000)
    ]
    states = {}
    for i, job in enumerate(jobs):
        if i % 10 == 9:
            states[job.key] = JobState(job.key, JobStatus.FAILED, f"p{i}", 1, error="boom")
        else:
            file = OutputFile(f"img/j{i:05d}.webp", 1000, "0" * 64)
            states[job.key] = JobState(job.key, JobStatus.DONE, f"p{i}", 1, files=(file,))
    out = tmp_path / "out"
    stats = write_gallery(jobs, Replay(jobs=states), out, title="big")
    assert (stats.jobs, stats.files) == (5000, 4500)
    size = stats.path.stat().st_size
    assert size / 5000 < 250, f"{size / 5000:.0f} bytes per entry"

    first = rendered(stats.path.as_uri(), tmp_path / "profile")
    assert len(first.cards) == 60  # one page in the DOM, not five thousand cards
    assert "j00000" in first.cards
    assert "page 1 of 84 (5000 shown)" in first.where
    last = rendered(stats.path.as_uri() + "#page=84", tmp_path / "profile")
    assert "j04999" in last.cards
    assert last.cards["j04999"]["error"] == "boom"
    failures = rendered(stats.path.as_uri() + "#status=failed&page=2", tmp_path / "profile")
    assert {c["status"] for c in failures.cards.values()} == {"failed"}
    assert "page 2 of 9 (500 shown)" in failures.where


def test_gallery_of_the_example_manifest_for_the_readme(tmp_path):
    """Run the example manifest on the built-in emulator; screenshot its gallery."""
    manifest = Path(__file__).resolve().parents[2] / "manifests" / "example.yaml"
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "run",
            str(manifest),
            "--emulator",
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "gallery: " in run.stderr  # written at the end of the run
    jobs = list(read_manifest(manifest))
    cards = rendered((out / "index.html").as_uri(), tmp_path / "profile")
    assert set(cards.cards) == {job.key for job in jobs}
    assert {c["status"] for c in cards.cards.values()} == {"done"}
    shot = screenshot((out / "index.html").as_uri(), tmp_path / "profile", tmp_path / "g.png")
    ARTEFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTEFACTS / "gallery-example.png")


def test_links_from_a_tampered_sidecar_stay_web_pages(tmp_path):
    job = Job("evil", ModelRef.parse(FLUX), {"prompt": "x"}, "evil")
    out = tmp_path / "out"
    out.mkdir()
    (out / "evil.info.json").write_text(
        json.dumps({"prediction_id": "p1", "web_url": "javascript:alert(1)", "input": {}})
    )
    state = JobState("evil", JobStatus.FAILED, "p1", 1, error="boom")
    stats = write_gallery([job], Replay(jobs={"evil": state}), out, title="t")
    dom = dump_dom(stats.path.as_uri(), tmp_path / "profile")
    assert "javascript:" not in dom
    assert 'href="https://replicate.com/p/p1"' in dom
