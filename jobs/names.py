"""Decide which output names are allowed: portable, clear of the engine's files, unique.

Three rules, each checked while a manifest is read, before anything is paid:

1. **Portable.** Every ``/``-separated segment of an output stem must be a name that
   Windows, SMB shares and archive tools accept: none of ``< > : " \\ | ? *``, no
   control character, no trailing dot or space, and not a device name (``CON``,
   ``PRN``, ``AUX``, ``NUL``, ``COM1``-``COM9``, ``LPT1``-``LPT9``, also with any
   extension, in any case: ``con.png`` and ``Nul.tar.gz`` are devices on Windows).
   Such stems are refused, never rewritten: a silent rename would break resume.
2. **Clear of the engine's files.** At the output root, the stems of `ENGINE_FILES`
   (``journal``, ``report``, ``index``) are reserved like a job's stem (rule 3), so
   every name the engine keeps there (``journal.jsonl``, its lock
   ``journal.jsonl.lock``, ``report.json``, ``index.html``: `EngineFiles.at_root`) lies
   in a reserved namespace, and no stem may start with ``.manifest-checked``.
3. **One namespace per stem.** A job with stem ``S`` owns every name that matches
   ``S(_<digits>)*.<anything>`` in its folder, compared as file systems that ignore case
   and Unicode normalisation do (`fold`: NFC, then casefold):
   ``S.png``, ``S_0.png``, ``S.image.png``, ``S.masks_0.png``, ``S_1.image.png``, its
   sidecar ``S.info.json`` and the ``.part`` files of each. Two stems conflict when
   one lies in the other's namespace or equals it with ``_<digits>`` appended (``a``
   and ``a_0``, ``a`` and ``a.image``), or when a folder of one (``a.png/`` in
   ``a.png/x``) lies in the namespace of the other.

Why rule 3 is enough for names decided only when the output arrives (how many files,
their extensions, the keys of an object): `jobs.outputs` only ever forms a name as the
stem followed by ``_<n>`` segments and then ``.``-led text (an extension, or key slugs
and an extension), so every name a job can ever write is in its namespace. If the
namespaces of two stems A and B share a name x, write x = A p a = B q b with p, q made
of ``_<digits>`` and a, b starting with ``.``; say A is the shorter, so B = A r. Where
r ends inside A p a, the next character of x must be ``_`` or ``.`` (the start of q or
b): inside p that happens only at the end of a ``_<digits>`` run, so r is made of
``_<digits>`` runs (B = A_0), or r reaches into a (B = A p .x). Either way B lies in
A's namespace and the manifest is refused; conversely, two accepted stems can never
meet, whatever their outputs turn out to be.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["ENGINE_FILES", "EngineFiles", "fold", "portability_problem"]

_FORBIDDEN_RE = re.compile(r'[<>:"\\|?*\x00-\x1f\x7f]')
_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"{kind}{n}" for kind in ("com", "lpt") for n in [*"123456789", "¹", "²", "³"]]
)
# After the stem: any "_<digits>" runs, then either the end (a stem that owns the stem
# it extends) or a "." and anything without a folder separator.
_TAIL_RE = re.compile(r"(?:_[0-9]+)+|(?:_[0-9]+)*\.[^/]*")


@dataclass(frozen=True, slots=True)
class EngineFiles:
    """The names the engine writes at the output root, beside the jobs' outputs.

    One home for them: the engine imports `ENGINE_FILES` to name its files, and the
    manifest reader refuses output stems that could take one of them.
    """

    journal: str = "journal.jsonl"
    report: str = "report.json"
    gallery: str = "index.html"
    stamp: str = ".manifest-checked.json"  # the precheck stamp (and its .tmp)
    stamp_prefix: str = ".manifest-checked"
    sidecar_suffix: str = ".info.json"  # a job's provenance: f"{stem}{sidecar_suffix}"
    lock_suffix: str = ".lock"  # beside the journal: who runs it (journal.jsonl.lock)
    part_meta_suffix: str = ".meta"  # beside a part: where its bytes came from (x.png.part.meta)

    @property
    def lock(self) -> str:
        """Return the default journal's lock file, ``journal.jsonl.lock``.

        Kept after a run on purpose: removing a file others may have opened to ``flock``
        it would let two processes each hold "the" lock (one on the removed inode).
        """
        return self.journal + self.lock_suffix

    @property
    def at_root(self) -> tuple[str, ...]:
        """Return every file the engine itself keeps at the output root, beside the jobs'."""
        return (self.journal, self.lock, self.report, self.gallery, self.stamp)

    @property
    def reserved_stems(self) -> tuple[str, ...]:
        """Return the stems reserved at the output root, like a job's (rule 3)."""
        return tuple(name.split(".", 1)[0] for name in (self.journal, self.report, self.gallery))

    def sidecar(self, stem: str) -> str:
        """Return the name of the provenance sidecar of the job with ``stem``."""
        return f"{stem}{self.sidecar_suffix}"


ENGINE_FILES = EngineFiles()


def portability_problem(segment: str) -> str | None:
    """Return why one path segment is not portable (rule 1), or None when it is."""
    bad = _FORBIDDEN_RE.search(segment)
    if bad is not None:
        char = bad.group()
        shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
        return f"has {shown} in {segment!r}, which Windows, SMB shares and archives refuse"
    if segment.endswith((".", " ")):
        return f"has {segment!r} ending in a dot or space, which Windows drops"
    device = segment.split(".", 1)[0].rstrip(" ").casefold()
    if device in _DEVICES:
        return f"has {segment!r}, a device name on Windows ({device.upper()})"
    return None


def fold(name: str) -> str:
    """Return the form two names share when a file system takes them for one file.

    macOS and Windows ignore case; macOS also stores ``é`` composed or decomposed alike.
    """
    return name.casefold() if name.isascii() else unicodedata.normalize("NFC", name).casefold()


def tail_owns(tail: str) -> bool:
    """Tell whether ``stem + tail`` lies in the namespace of ``stem`` (rule 3)."""
    return _TAIL_RE.fullmatch(tail) is not None


def roots(stem: str) -> list[str]:
    """Return the stems (casefolded) in whose namespace ``stem`` or one of its folders lies.

    ``a.b_0/c_1`` gives ``a``, ``a.b`` (the folder ``a.b_0`` lies in their namespaces)
    and ``a.b_0/c`` (the stem itself lies in that one's).
    """
    if "." not in stem and "_" not in stem:
        return []  # the common case (a job key), kept cheap: no stem lies above it
    folded = fold(stem)
    found: list[str] = []
    start = 0
    for segment in folded.split("/"):
        end = start + len(segment)
        found.extend(
            folded[:i]
            for i in range(start + 1, end)
            if folded[i] in "._" and tail_owns(folded[i:end])
        )
        start = end + 1
    return found
