"""Compile output name templates once and fill them in for each job, at read time.

Private to `jobs._builder`. Every value a template can hold is known when the manifest
is read, so every stem is checked (portable, unique, clear of the engine's files: see
`jobs.names`) before anything is paid. That is why ``{prediction_id}`` and ``{date}``
are refused (see `REFUSED`).

Placeholders:

``{id}``, ``{index}`` (alias ``{job_index}``), ``{model_owner}``, ``{model_name}``
    Filled as they are; a Python format spec works (``{index:05}``).
``{model_path}``
    ``owner/name`` for a model, ``deployments/owner/name`` for a deployment: two
    folders that keep a deployment apart from a model of the same name.
``{input.a}``, ``{input.a.b}``, ``{input.images.0}``, ``{input.prompt:40}``
    The job's input field (after defaults; ``@path`` as written), as a slug (`slug`)
    cut to the width after ``:`` (default `DEFAULT_WIDTH`). A field the job's input
    lacks, or one holding a mapping or a list, is an error on the job's line.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobs._readers import suggest
from jobs.model import ModelRef
from jobs.names import portability_problem

__all__ = [
    "DEFAULT_WIDTH",
    "PLACEHOLDERS",
    "REFUSED",
    "Template",
    "TemplateError",
    "compile_template",
    "slug",
]

PLACEHOLDERS = ("id", "index", "job_index", "model_name", "model_owner", "model_path")
INPUT_PREFIX = "input."
DEFAULT_WIDTH = 64
MAX_WIDTH = 200  # the longest path segment `check_output_stem` accepts
REFUSED = {
    "prediction_id": (
        "a prediction's id exists only once it is created, so the name could not be "
        "checked for collisions before paying, and a retried job (a new prediction) "
        "would write its files under a second name; the id is in the job's sidecar "
        "{stem}.info.json and in `export`"
    ),
    "date": (
        "the date a job runs changes between a run and its resume, so a resumed job's "
        "files would move and the name could not be checked before paying; write the "
        "date into --output (one folder per night) or literally into the template; the "
        "job's times are in its sidecar {stem}.info.json"
    ),
}
_NOT_SLUG_RE = re.compile(r"[^a-z0-9]+")
_WIDTH_RE = re.compile(r"[0-9]{1,3}")
_SPEC_NUMBER_RE = re.compile(r"[0-9]+")
MAX_SPEC = 255  # the bytes a file name can hold on common file systems
_SHOWN = 80  # the longest placeholder or template text an error repeats whole


def _shown(text: str) -> str:
    """Return ``text`` cut for an error message: a template can be megabytes long."""
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN - 3]}..."


class TemplateError(ValueError):
    """Raise when a job's values cannot fill a template (e.g. a missing input field)."""


def slug(value: str, width: int = DEFAULT_WIDTH) -> str:
    """Return ``value`` as a portable name part of at most ``width`` characters.

    NFKD-fold to ASCII (``é`` -> ``e``, ``ﬁ`` -> ``fi``; what has no ASCII form goes),
    lowercase, every run of characters other than ``a-z 0-9`` becomes one ``-``, cut to
    ``width``, trimmed of ``-``. Never empty (``_`` instead) and never a Windows device
    name (``con`` -> ``con_``), so the slug alone is always a portable segment.
    """
    ascii_text = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    text = _NOT_SLUG_RE.sub("-", ascii_text.lower()).strip("-")[:width].strip("-")
    if not text:
        return "_"
    if portability_problem(text) is not None:
        return f"{text}_"  # a device name: con, lpt1, ...
    return text


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # a placeholder of PLACEHOLDERS, or "input"
    path: tuple[str, ...]  # the keys after "input."
    spec: str  # a format spec, or the slug's width for an input field
    text: str  # the placeholder as written, for messages


@dataclass(frozen=True, slots=True)
class Template:
    """A checked template: literal text and fields, in order."""

    text: str
    parts: tuple[str | _Field, ...]
    # {model_name} in a folder of the stem: the folder is meant to be one model's.
    model_name_in_folder: bool

    def fill(self, *, key: str, index: int, model: ModelRef, given_input: Mapping[str, Any]) -> str:
        """Return the stem for one job, or raise `TemplateError` saying what is missing."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif part.name == "input":
                out.append(slug(_input_value(part, given_input), int(part.spec)))
            else:
                value = _plain_value(part.name, key, index, model)
                out.append(format(value, part.spec))
        return "".join(out)


def compile_template(text: str) -> Template:
    """Check ``text`` and return it compiled, or raise `ValueError` saying what is wrong."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"malformed template {text!r}: {exc}") from None
    if text.startswith("/") or "\\" in text:
        raise ValueError(f"template {text!r} would write outside the output folder")
    parts: list[str | _Field] = []
    model_name_at: list[int] = []
    slash_at = -1
    for literal, name, spec, conversion in parsed:
        if literal:
            parts.append(literal)
            if "/" in literal:
                slash_at = len(parts)
        if name is None:
            continue
        bang = f"!{conversion}" if conversion else ""
        written = "{" + name + bang + (f":{spec}" if spec else "") + "}"
        if conversion:
            raise ValueError(f"{written} in {text!r}: conversions (!r, !s, !a) are not allowed")
        parts.append(_field(name, spec or "", written, text))
        if name == "model_name":
            model_name_at.append(len(parts))
    return Template(text, tuple(parts), any(at < slash_at for at in model_name_at))


def _field(name: str, spec: str, written: str, text: str) -> _Field:
    if name.startswith(INPUT_PREFIX):
        path = tuple(name[len(INPUT_PREFIX) :].split("."))
        if any(not key or "[" in key or "]" in key for key in path):
            raise ValueError(
                f"{written} in {text!r}: name an input field as {{input.a}}, "
                "{input.a.b} or {input.images.0}"
            )
        if spec and not (_WIDTH_RE.fullmatch(spec) and 1 <= int(spec) <= MAX_WIDTH):
            raise ValueError(
                f"{written} in {text!r}: after ':' comes the slug's width, "
                f"1 to {MAX_WIDTH} characters, as in {{input.prompt:40}}"
            )
        return _Field("input", path, spec or str(DEFAULT_WIDTH), written)
    if name in REFUSED:
        raise ValueError(f"{{{name}}} in {text!r} is not supported: {REFUSED[name]}")
    if name not in PLACEHOLDERS:
        hint = suggest(name, PLACEHOLDERS)
        known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
        raise ValueError(
            f"unknown placeholder {{{name}}} in {text!r}{hint}; known: {known}, {{input.<field>}}"
        )
    numbers = _SPEC_NUMBER_RE.findall(spec)
    if any(len(n.lstrip("0")) > len(str(MAX_SPEC)) or int(n) > MAX_SPEC for n in numbers):
        # Formatting first would build the whole string: {index:.100000000f} is 100 MB.
        raise ValueError(
            f"{_shown(written)} in {_shown(text)}: a width or precision above {MAX_SPEC} "
            "makes a name longer than a file name can be"
        )
    sample = 0 if name in ("index", "job_index") else "x"
    try:
        format(sample, spec)
    except ValueError as exc:
        raise ValueError(f"{written} in {text!r}: bad format spec: {exc}") from None
    return _Field(name, (), spec, written)


def _plain_value(name: str, key: str, index: int, model: ModelRef) -> object:
    if name == "id":
        return key
    if name in ("index", "job_index"):
        return index
    if name == "model_owner":
        return model.owner
    if name == "model_name":
        return model.name
    return f"deployments/{model.slug}" if model.deployment else model.slug  # model_path


def _input_value(part: _Field, given_input: Mapping[str, Any]) -> str:
    value: Any = given_input
    for depth, key in enumerate(part.path):
        where = ".".join(("input", *part.path[:depth]))
        if isinstance(value, Mapping):
            if key not in value:
                known = ", ".join(sorted(map(str, value))) or "none"
                raise TemplateError(f"{part.text}: {where} has no field {key!r} (it has: {known})")
            value = value[key]
        elif isinstance(value, list):
            if not key.isdigit() or int(key) >= len(value):
                raise TemplateError(
                    f"{part.text}: {where} is a list of {len(value)}; {key!r} is not an index in it"
                )
            value = value[int(key)]
        else:
            raise TemplateError(f"{part.text}: {where} is a single value, with no field {key!r}")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (Mapping, list)):
        kind = "a mapping" if isinstance(value, Mapping) else "a list"
        raise TemplateError(
            f"{part.text}: input.{'.'.join(part.path)} is {kind}; "
            "name one value inside it, as in {input.a.b} or {input.images.0}"
        )
    return str(value)
