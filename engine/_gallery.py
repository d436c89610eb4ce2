"""Write ``index.html`` beside a run's outputs: the night's work at a glance, offline.

Built from the manifest, the journal and the sidecars only (no network), so
``python -m engine gallery MANIFEST`` gives the same page as the end of a run. One card per
job: thumbnails of images (lazy-loaded), playable videos, text excerpts, the prompt (or the
input) as caption, model, links to the prediction and its sidecar, failures with their
errors; filters by model, status and text.

The page is one self-contained file (inline CSS and JS, no CDN) that stays fast with
thousands of outputs: the entries are one compact JSON document that the script renders a
page at a time, so the DOM holds one page of cards. Every string reaches the DOM through
``textContent`` or an attribute, never as markup, and the JSON escapes ``<`` so no prompt
can close the script element. Paths are relative: the folder can be copied or served.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine._durable import write_durably
from engine._journal import JobState, Replay, load_journal
from engine._pricing import model_label
from engine._redact import redact
from engine._sidecar import SIDECAR_SUFFIX, read_sidecar, web_url
from jobs import Job, JobStatus, read_manifest

__all__ = [
    "GALLERY_NAME",
    "GalleryStats",
    "gallery_entries",
    "render_gallery",
    "write_gallery",
    "write_manifest_gallery",
]

GALLERY_NAME = "index.html"
PAGE_SIZE = 60  # cards per page: a screenful or two, rendered in milliseconds
_CAPTION_CHARS = 400
_EXCERPT_BYTES = 600
_IMAGE = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".avif", ".bmp", ".svg"})
_VIDEO = frozenset({".mp4", ".webm", ".mov", ".m4v"})
_AUDIO = frozenset({".mp3", ".wav", ".ogg", ".flac", ".m4a", ".aac"})
_TEXT = frozenset({".txt", ".json", ".md", ".csv"})


@dataclass(frozen=True, slots=True)
class GalleryStats:
    """What a written gallery shows: where it is and how many jobs and files it holds."""

    path: Path
    jobs: int
    files: int


def _kind(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()  # noqa: PTH122 - a relative name, not a path
    if ext in _IMAGE:
        return "i"
    if ext in _VIDEO:
        return "v"
    if ext in _AUDIO:
        return "a"
    return "t" if ext in _TEXT else "o"


def _caption(inputs: object) -> str:
    if isinstance(inputs, dict):
        prompt = inputs.get("prompt")
        if isinstance(prompt, str) and prompt.strip():
            return prompt[:_CAPTION_CHARS]
        text = json.dumps(inputs, ensure_ascii=False, sort_keys=True, default=str)
        return text[:_CAPTION_CHARS]
    return ""


def _excerpt(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(_EXCERPT_BYTES)
    except OSError:
        return ""
    return data.decode("utf-8", "replace").rstrip("\ufffd")


def gallery_entries(
    jobs: Iterable[Job], replay: Replay, output_dir: Path
) -> Iterator[dict[str, Any]]:
    """Yield one compact entry per job of the manifest, in manifest order.

    Keys: ``k`` job key, ``m`` model, ``s`` status, ``c`` caption, ``f`` files as
    ``[name, kind]`` (kind: i image, v video, a audio, t text, o other), ``x`` a text
    excerpt, ``e`` error, ``p`` prediction id, ``w`` web link, ``j`` sidecar, ``v`` version.
    Absent keys are left out to keep thousands of entries small.
    """
    for job in jobs:
        state: JobState | None = replay.jobs.get(job.key)
        status = state.status if state is not None else JobStatus.PENDING
        sidecar_name = f"{job.output}{SIDECAR_SUFFIX}"
        sidecar = read_sidecar(output_dir / sidecar_name) if state is not None else None
        entry: dict[str, Any] = {
            "k": job.key,
            "m": redact(model_label(job.model)),
            "s": status.value,
            # A page meant to be shared: a token pasted into a prompt stays out of it.
            "c": redact(_caption(sidecar["input"] if sidecar else job.input)),
        }
        names: list[str] = []
        if state is not None and state.files:
            names = [f.name for f in state.files]
        elif sidecar is not None and status is JobStatus.DONE:
            names = [str(f["name"]) for f in sidecar.get("files") or ()]
        if names:
            entry["f"] = [[name, _kind(name)] for name in names]
            text = next((n for n in names if _kind(n) == "t"), None)
            if text is not None:
                entry["x"] = _excerpt(output_dir / text)
        if state is not None and state.error and status is not JobStatus.DONE:
            cls = state.error_class
            entry["e"] = redact(f"{cls}: {state.error}" if cls else state.error)
        elif sidecar is not None and sidecar.get("error") and status is not JobStatus.DONE:
            entry["e"] = redact(str(sidecar["error"]))
        prediction_id = (sidecar or {}).get("prediction_id") or (state and state.prediction_id)
        if prediction_id:
            entry["p"] = prediction_id
            link = (sidecar or {}).get("web_url")
            # Only a web page: a sidecar naming a javascript: or data: URL gets ours.
            ok = isinstance(link, str) and link.startswith("https://")
            entry["w"] = link if ok else web_url(str(prediction_id))
        if sidecar is not None:
            entry["j"] = sidecar_name
            if sidecar.get("version"):
                entry["v"] = str(sidecar["version"])
        yield entry


def _script_json(value: object) -> str:
    """Return JSON that is safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _html_text(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def render_gallery(entries: Iterable[dict[str, Any]], *, title: str, generated: str) -> str:
    """Return the gallery page for ``entries`` (from `gallery_entries`)."""
    data = {"title": title, "generated": generated, "page": PAGE_SIZE, "jobs": list(entries)}
    return (
        _TEMPLATE.replace("%%TITLE%%", _html_text(title))
        .replace("%%CSS%%", _CSS)
        .replace("%%JS%%", _JS)
        .replace("%%DATA%%", _script_json(data))
    )


def write_gallery(
    jobs: Iterable[Job], replay: Replay, output_dir: Path, *, title: str
) -> GalleryStats:
    """Write ``index.html`` into ``output_dir`` durably and return what it holds."""
    entries = list(gallery_entries(jobs, replay, output_dir))
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    page = render_gallery(entries, title=title, generated=generated).encode()
    path = output_dir / GALLERY_NAME
    write_durably(path, page)
    files = sum(len(e.get("f", ())) for e in entries)
    return GalleryStats(path, len(entries), files)


def write_manifest_gallery(manifest: Path, output_dir: Path, journal: Path) -> GalleryStats:
    """Write the gallery of ``manifest``'s run from its journal and sidecars (no network).

    Raise `jobs.ManifestError` for a bad manifest and OSError when the folder refuses.
    """
    replay = load_journal(journal)
    # Nothing is sent: an @file outside the manifest's folder is only named here.
    jobs = read_manifest(manifest, allow_outside_files=True)
    return write_gallery(jobs, replay, output_dir, title=manifest.name)


_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>%%TITLE%%</title>
<style>%%CSS%%</style>
</head>
<body>
<header>
<h1 id="title">%%TITLE%%</h1>
<p id="counts"></p>
<form id="filters" role="search" onsubmit="return false">
<label>Model <select id="model"><option value="">all</option></select></label>
<label>Status <select id="status"><option value="">all</option></select></label>
<label>Search <input id="q" type="search" placeholder="prompt or id"></label>
</form>
</header>
<nav class="pager" id="pager-top"></nav>
<main id="grid"><noscript>This gallery needs JavaScript to show its cards.</noscript></main>
<nav class="pager" id="pager"></nav>
<footer id="footer"></footer>
<script id="gallery-data" type="application/json">%%DATA%%</script>
<script>%%JS%%</script>
</body>
</html>
"""

_CSS = """
:root{color-scheme:light dark;--bg:#111;--fg:#eee;--card:#1c1c1c;--muted:#999;--bad:#f66;
--ok:#6c6;--line:#333}
@media (prefers-color-scheme:light){:root{--bg:#f6f6f6;--fg:#111;--card:#fff;--muted:#666;
--line:#ddd}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
header{padding:12px 16px;border-bottom:1px solid var(--line);position:sticky;top:0;
background:var(--bg);z-index:1}
h1{font-size:18px;margin:0 0 4px}
#counts{margin:0 0 8px;color:var(--muted)}
#filters{display:flex;gap:12px;flex-wrap:wrap}
select,input{font:inherit}
#grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px;
padding:12px 16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;margin:0;
overflow:hidden;display:flex;flex-direction:column}
.card.failed,.card.canceled{border-color:var(--bad)}
.media{display:grid;grid-template-columns:repeat(auto-fill,minmax(120px,1fr));gap:2px}
.media a{display:block}
.media img{width:100%;aspect-ratio:1/1;object-fit:cover;display:block;background:var(--line)}
.media video{width:100%;display:block;background:#000}
.media .one{grid-column:1/-1}
.media a.file{padding:6px 8px;color:inherit;overflow-wrap:anywhere}
.media audio{width:100%}
pre.text{margin:0;padding:8px;white-space:pre-wrap;max-height:12em;overflow:hidden;
font-size:12px;border-bottom:1px solid var(--line)}
figcaption{padding:8px;display:flex;flex-direction:column;gap:4px}
.caption{margin:0;overflow-wrap:anywhere}
.meta{margin:0;color:var(--muted);font-size:12px;display:flex;flex-wrap:wrap;gap:6px}
.meta a{color:inherit}
.status{font-weight:600}
.status.done{color:var(--ok)}.status.failed,.status.canceled{color:var(--bad)}
.error{margin:0;color:var(--bad);font-size:12px;overflow-wrap:anywhere}
.pager{display:flex;gap:8px;align-items:center;padding:0 16px}
.pager button{font:inherit}
footer{padding:12px 16px;color:var(--muted);font-size:12px}
"""

_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("gallery-data").textContent);
  var jobs = data.jobs, pageSize = data.page;
  var $ = function (id) { return document.getElementById(id); };
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) { for (var k in attrs) { if (attrs[k] != null) node.setAttribute(k, attrs[k]); } }
    if (text != null) node.textContent = text;
    return node;
  }
  function href(name) { return name.split("/").map(encodeURIComponent).join("/"); }
  function counts(list, key) {
    var out = {};
    list.forEach(function (j) { out[j[key]] = (out[j[key]] || 0) + 1; });
    return out;
  }
  function fill(select, values) {
    Object.keys(values).sort().forEach(function (v) {
      select.appendChild(el("option", {value: v}, v + " (" + values[v] + ")"));
    });
  }
  var byStatus = counts(jobs, "s");
  fill($("model"), counts(jobs, "m"));
  fill($("status"), byStatus);
  var nFiles = jobs.reduce(function (n, j) { return n + (j.f ? j.f.length : 0); }, 0);
  $("counts").textContent = jobs.length + " jobs, " + nFiles + " files: " +
    Object.keys(byStatus).sort().map(function (s) { return byStatus[s] + " " + s; }).join(", ");
  $("footer").textContent = "Generated " + data.generated + " from the journal and sidecars.";

  function state() {
    var params = new URLSearchParams(location.hash.slice(1));
    var page = parseInt(params.get("page") || "1", 10) || 1;
    return {model: params.get("model") || "", status: params.get("status") || "",
            q: params.get("q") || "", page: Math.max(1, page)};
  }
  function setState(s) {
    var params = new URLSearchParams();
    if (s.model) params.set("model", s.model);
    if (s.status) params.set("status", s.status);
    if (s.q) params.set("q", s.q);
    if (s.page > 1) params.set("page", String(s.page));
    location.hash = params.toString();
  }
  function media(job) {
    var box = el("div", {"class": "media"});
    var files = job.f || [];
    var poster = null, images = 0;
    files.forEach(function (f) {
      if (f[1] === "i") { images += 1; if (!poster) poster = href(f[0]); }
    });
    files.forEach(function (f) {
      var name = f[0], kind = f[1], link = el("a", {href: href(name), title: name});
      var node;
      if (kind === "i") {
        node = el("img", {src: href(name), alt: job.c || name, loading: "lazy",
                          decoding: "async", "data-file": name});
        link.appendChild(node);
        if (images === 1) link.setAttribute("class", "one");
        box.appendChild(link);
      } else if (kind === "v") {
        node = el("video", {src: href(name), controls: "", preload: "none", playsinline: "",
                            poster: poster, "class": "one", "data-file": name});
        box.appendChild(node);
      } else if (kind === "a") {
        node = el("audio", {src: href(name), controls: "", preload: "none", "class": "one",
                            "data-file": name});
        box.appendChild(node);
      } else {
        link.setAttribute("data-file", name);
        link.setAttribute("class", "one file");
        link.textContent = name;
        box.appendChild(link);
      }
    });
    return box;
  }
  function card(job) {
    var fig = el("figure", {"class": "card " + job.s, "data-key": job.k, "data-status": job.s,
                            "data-model": job.m});
    if (job.f) fig.appendChild(media(job));
    if (job.x) fig.appendChild(el("pre", {"class": "text"}, job.x));
    var cap = el("figcaption");
    cap.appendChild(el("p", {"class": "caption"}, job.c || job.k));
    var meta = el("p", {"class": "meta"});
    meta.appendChild(el("span", {"class": "status " + job.s}, job.s));
    meta.appendChild(el("span", {"class": "key"}, job.k));
    meta.appendChild(el("span", {"class": "model", title: job.v || ""}, job.m));
    if (job.w) meta.appendChild(el("a", {href: job.w, rel: "noreferrer", "class": "web"},
                                   "prediction"));
    if (job.j) meta.appendChild(el("a", {href: href(job.j), "class": "info"}, "info"));
    cap.appendChild(meta);
    if (job.e) cap.appendChild(el("p", {"class": "error"}, job.e));
    fig.appendChild(cap);
    return fig;
  }
  function pager(nav, s, pages, total) {
    nav.textContent = "";
    var prev = el("button", {type: "button", "class": "prev"}, "\u2190 previous");
    var next = el("button", {type: "button", "class": "next"}, "next \u2192");
    prev.disabled = s.page <= 1;
    next.disabled = s.page >= pages;
    prev.onclick = function () { s.page -= 1; setState(s); };
    next.onclick = function () { s.page += 1; setState(s); };
    nav.appendChild(prev);
    nav.appendChild(el("span", {"class": "where"},
                       "page " + s.page + " of " + pages + " (" + total + " shown)"));
    nav.appendChild(next);
  }
  function render() {
    var s = state();
    $("model").value = s.model;
    $("status").value = s.status;
    if ($("q") !== document.activeElement) $("q").value = s.q;
    var q = s.q.toLowerCase();
    var shown = jobs.filter(function (j) {
      return (!s.model || j.m === s.model) && (!s.status || j.s === s.status) &&
        (!q || (j.c || "").toLowerCase().indexOf(q) >= 0 || j.k.toLowerCase().indexOf(q) >= 0);
    });
    var pages = Math.max(1, Math.ceil(shown.length / pageSize));
    if (s.page > pages) s.page = pages;
    var grid = $("grid"), frag = document.createDocumentFragment();
    shown.slice((s.page - 1) * pageSize, s.page * pageSize).forEach(function (j) {
      frag.appendChild(card(j));
    });
    grid.textContent = "";
    grid.appendChild(frag);
    pager($("pager-top"), s, pages, shown.length);
    pager($("pager"), s, pages, shown.length);
  }
  function onFilter() {
    setState({model: $("model").value, status: $("status").value, q: $("q").value, page: 1});
  }
  $("model").onchange = onFilter;
  $("status").onchange = onFilter;
  $("q").oninput = onFilter;
  window.addEventListener("hashchange", render);
  render();
})();
"""
