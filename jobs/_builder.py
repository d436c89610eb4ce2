"""Turn raw manifest entries into jobs: merge defaults, check fields, resolve @files, key.

Private to `jobs.manifest`; split out so each module keeps one job.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from jobs._files import LocalFiles, Where, remember
from jobs._readers import RawEntry, suggest
from jobs._template import Template, TemplateError, compile_template
from jobs._unique import Seen
from jobs.errors import ManifestError
from jobs.identity import canonical_json, canonical_key
from jobs.model import Job, ModelRef, ModelRefError
from jobs.names import fold
from jobs.outputs import check_output_stem

__all__ = ["Builder"]

JOB_FIELDS = ("id", "input", "model", "output")
_JOB_FIELD_SET = frozenset(JOB_FIELDS)
DEFAULT_FIELDS = ("input", "model", "models", "output")
MODEL_DEFAULT_FIELDS = ("input",)
DEFAULT_OUTPUT = "{id}"

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NO_LINES: Mapping[str, int] = MappingProxyType({})
_CACHE_LIMIT = 1024  # distinct models, templates and @files remembered while reading

# Input defaults for one model: the values, and each key's (line, field) in `defaults`.
_Origins = dict[str, tuple[int, str]]


@dataclass(frozen=True, slots=True)
class _Defaults:
    """The input defaults that apply to one model, merged once and shared by its jobs."""

    input: dict[str, Any]
    origins: _Origins
    lines: Mapping[str, int]  # what `Job.default_lines` holds when a job overrides none


class Builder:
    """Turn raw entries into jobs: merge defaults, check fields, resolve @files, key."""

    def __init__(
        self,
        path: Path,
        source: str,
        *,
        trust_earlier_check: bool = False,
        allow_outside_files: bool = False,
    ) -> None:
        self.source = source
        # The file was read whole without error before: skip the duplicate index and the
        # checks that cannot fail again on the same bytes.
        self.checked = trust_earlier_check
        self.files = LocalFiles(path.parent, source, allow_outside=allow_outside_files)
        self.index = 0
        self.seen = Seen()
        self.default_model: ModelRef | None = None
        self.default_input: dict[str, Any] = {}
        self.default_origins: _Origins = {}
        self.model_inputs: dict[str, tuple[dict[str, Any], _Origins]] = {}
        self.default_output: str | None = None
        self.default_output_line = 0
        # (folder, model name) -> the first line of a [model, deployment] writing there,
        # for templates with {model_name} in a folder.
        self.model_folders: dict[tuple[str, str], list[int]] = {}
        self._defaults: dict[str, _Defaults] = {}
        self._models: dict[str, ModelRef] = {}
        self._templates: dict[str, Template | str] = {}

    def error(self, message: str, line: int, field: str | None = None) -> ManifestError:
        return ManifestError(message, path=self.source, line=line, field=field or None)

    def defaults(self, entry: RawEntry) -> Iterator[ManifestError]:
        """Take in the ``defaults`` block; yield what is wrong with it."""
        value = entry.value
        if value is None:
            return
        if not isinstance(value, dict):
            yield self.error("must be a mapping", entry.line, "defaults")
            return
        for name in value:
            if name not in DEFAULT_FIELDS:
                hint = suggest(name, DEFAULT_FIELDS)
                line = entry.field_lines.get(str(name), entry.line)
                yield self.error(f"unknown field{hint}", line, f"defaults.{name}")
        line_of = entry.field_lines.get
        if "model" in value:
            try:
                self.default_model = self.model(value["model"], line_of("model", entry.line))
            except ManifestError as exc:
                exc.field = "defaults.model"
                yield exc
        if "input" in value:
            if isinstance(value["input"], dict):
                self.default_input = value["input"]
                self.default_origins = {
                    str(k): (line_of(f"input.{k}", entry.line), f"defaults.input.{k}")
                    for k in value["input"]
                }
            else:
                message = f"must be a mapping, not {_kind(value['input'])}"
                yield self.error(message, line_of("input", entry.line), "defaults.input")
        if "models" in value:
            yield from self.model_defaults(value["models"], entry)
        if "output" in value:
            problem = self.template_problem(value["output"])
            if problem is None:
                self.default_output = value["output"]
                self.default_output_line = line_of("output", entry.line)
            else:
                yield self.error(problem, line_of("output", entry.line), "defaults.output")

    def model_defaults(self, models: object, entry: RawEntry) -> Iterator[ManifestError]:
        """Take in ``defaults.models``: ``{owner/name: {input: {...}}}``."""
        line_of = entry.field_lines.get
        if not isinstance(models, dict):
            message = f"must be a mapping of model to defaults, not {_kind(models)}"
            yield self.error(message, line_of("models", entry.line), "defaults.models")
            return
        for text, spec in models.items():
            name = f"models.{text}"
            line, field = line_of(name, entry.line), f"defaults.{name}"
            try:
                ref = self.model(text, line, field)
            except ManifestError as exc:
                yield exc
                continue
            if not isinstance(spec, dict):
                yield self.error("must be a mapping like {input: {...}}", line, field)
                continue
            unknown = [str(n) for n in spec if n not in MODEL_DEFAULT_FIELDS]
            if unknown:
                hint = suggest(unknown[0], MODEL_DEFAULT_FIELDS)
                line = line_of(f"{name}.{unknown[0]}", line)
                yield self.error(f"unknown field{hint}", line, f"{field}.{unknown[0]}")
                continue
            given = spec.get("input", {})
            if not isinstance(given, dict):
                line = line_of(f"{name}.input", line)
                yield self.error(f"must be a mapping, not {_kind(given)}", line, f"{field}.input")
                continue
            origins = {
                str(k): (line_of(f"{name}.input.{k}", line), f"{field}.input.{k}") for k in given
            }
            self.model_inputs[str(ref)] = (given, origins)

    def defaults_for(self, model: ModelRef) -> _Defaults:
        """Return the input defaults of ``model``: general, then its own (more exact wins)."""
        key = str(model)
        found = self._defaults.get(key)
        if found is not None:
            return found
        merged, origins = dict(self.default_input), dict(self.default_origins)
        for ref in (model.slug, key) if model.version else (key,):
            given, given_origins = self.model_inputs.get(ref, ({}, {}))
            merged.update(given)
            origins.update(given_origins)
        for name in [k for k, v in merged.items() if v is None]:
            del merged[name]  # a model's `key: null` removes a general default
        lines = MappingProxyType({k: origins[k][0] for k in merged if k in origins})
        found = _Defaults(merged, origins, lines)
        _remember(self._defaults, key, found)
        return found

    def job(self, entry: RawEntry) -> Job:
        """Build one job or raise the first thing wrong with it."""
        index = self.index
        self.index += 1
        label = entry.label
        value = entry.value

        given_input: Any = {}
        origins: _Origins = {}

        def where(name: str) -> tuple[int, str]:
            # A key that came from the defaults is located there, not on the job.
            if origins and name.startswith("input."):
                key = name[len("input.") :]
                if key in origins and key not in given_input:
                    return origins[key]
            return entry.field_lines.get(name, entry.line), f"{label}.{name}" if label else name

        if not isinstance(value, dict):
            raise self.error(f"a job must be a mapping, not {_kind(value)}", entry.line, label)
        if not _JOB_FIELD_SET.issuperset(value):
            name = next(str(n) for n in value if n not in _JOB_FIELD_SET)
            raise self.error(f"unknown field{suggest(name, JOB_FIELDS)}", *where(name))
        if "model" in value:
            model = self.model(value["model"], *where("model"))
        elif self.default_model is not None:
            model = self.default_model
        else:
            raise self.error(
                "missing field 'model' (give it here or in the defaults)", entry.line, label
            )
        given_input = value.get("input", {})
        if not isinstance(given_input, dict):
            raise self.error(f"must be a mapping, not {_kind(given_input)}", *where("input"))
        # canonical_json below refuses non-string field names (YAML allows `1: x`).
        defaults = self.defaults_for(model) if self.default_origins or self.model_inputs else None
        default_lines: Mapping[str, int] = _NO_LINES
        if defaults is not None and defaults.input:
            origins = defaults.origins
            merged = {**defaults.input, **given_input}
            default_lines = defaults.lines
            if not default_lines.keys().isdisjoint(given_input):
                default_lines = {k: v for k, v in default_lines.items() if k not in given_input}
        else:
            merged = given_input
        if None in merged.values():
            # `key: null` means "do not send this key" (typically: drop a default).
            merged = {k: v for k, v in merged.items() if v is not None}
        job_input, key_input = self.files.resolve(merged, where)
        explicit = "id" in value
        if explicit and self.checked:
            # The first read checked the id, and that the input is JSON: all an explicit
            # id's canonical input is for. Rendering it is the dearest step of a job.
            key: str = value["id"]
        elif explicit:
            self.canonical(key_input, where)
            key = self.job_id(value["id"], *where("id"))
        else:
            key = canonical_key(model, self.canonical(key_input, where))
        stem = self.output(value, key, model, index, where, given_input=merged)
        if not self.checked:
            self.check_unique(key, stem, explicit, entry.line, label)
            self.check_model_folder(value, stem, model, entry.line, where)
        return Job(
            key=key,
            model=model,
            input=job_input,
            output=stem,
            source=self.source,
            line=entry.line,
            index=index,
            explicit_id=explicit,
            default_lines=default_lines,
        )

    def canonical(self, key_input: dict[str, Any], where: Where) -> str:
        try:
            return canonical_json(key_input)
        except (TypeError, ValueError) as exc:
            raise self.error(f"not JSON: {exc}", *where("input")) from None

    def model(self, value: object, line: int, field: str | None = None) -> ModelRef:
        if not isinstance(value, str):
            raise self.error(f"must be a string like 'owner/name', not {_kind(value)}", line, field)
        ref = self._models.get(value)
        if ref is None:
            try:
                ref = ModelRef.parse(value)
            except ModelRefError as exc:
                raise self.error(str(exc), line, field) from None
            _remember(self._models, value, ref)
        return ref

    def job_id(self, value: object, line: int, field: str) -> str:
        if not isinstance(value, str):
            raise self.error(f"must be a string, not {_kind(value)}; quote it", line, field)
        if not _ID_RE.fullmatch(value):
            # fullmatch: "$" would also match before a trailing newline.
            raise self.error(
                f"invalid id {value!r}: use 1 to 128 of A-Z a-z 0-9 . _ -", line, field
            )
        if value in (".", ".."):
            raise self.error(f"id {value!r} would write outside the output folder", line, field)
        problem = check_output_stem(value)  # the id is the default output stem
        if problem is not None:
            raise self.error(f"id {value!r} {problem}", line, field)
        return value

    def output(
        self,
        value: dict[str, Any],
        key: str,
        model: ModelRef,
        index: int,
        where: Where,
        *,
        given_input: dict[str, Any],
    ) -> str:
        if "output" in value:
            text = value["output"]
            problem = self.template_problem(text)
            if problem is not None:
                raise self.error(problem, *where("output"))
            origin = ""
        else:
            text = self.default_output or DEFAULT_OUTPUT
            origin = f" (from defaults.output, line {self.default_output_line})"
        if text == DEFAULT_OUTPUT:
            return key  # keys and ids are checked to be safe file stems already
        template = self.compiled(text)
        assert isinstance(template, Template)  # template_problem checked it
        try:
            stem = template.fill(key=key, index=index, model=model, given_input=given_input)
        except TemplateError as exc:
            message = f"cannot fill output template {text!r}{origin}: {exc}"
            raise self.error(message, *where("output")) from None
        except (ValueError, TypeError) as exc:
            message = f"cannot fill template {text!r}{origin}: {exc}"
            raise self.error(message, *where("output")) from None
        problem = check_output_stem(stem)
        if problem is not None:
            raise self.error(f"output {stem!r} {problem}", *where("output"))
        return stem

    def template_problem(self, text: object) -> str | None:
        if not isinstance(text, str):
            return f"must be a string template like '{{id}}', not {_kind(text)}"
        found = self.compiled(text)
        return found if isinstance(found, str) else None

    def compiled(self, text: str) -> Template | str:
        """Return ``text`` compiled, or what is wrong with it (remembered either way)."""
        found = self._templates.get(text)
        if found is None:
            try:
                found = compile_template(text)
            except ValueError as exc:
                found = str(exc)
            _remember(self._templates, text, found)
        return found

    def check_model_folder(
        self, value: dict[str, Any], stem: str, model: ModelRef, line: int, where: Where
    ) -> None:
        """Refuse a folder meant for one model that would hold a deployment of its name too.

        ``{model_name}/{id}`` puts ``deployments/acme/flux`` and ``black-forest-labs/flux``
        in one folder ``flux``: an accident, since the template says "a folder per model".
        """
        text = value.get("output", self.default_output)
        if not isinstance(text, str) or "/" not in stem:
            return
        template = self.compiled(text)
        if not isinstance(template, Template) or not template.model_name_in_folder:
            return
        folder = fold(stem.rsplit("/", 1)[0])
        slots = self.model_folders.setdefault((folder, model.name), [0, 0])
        mine, other = (1, 0) if model.deployment else (0, 1)
        if slots[other]:
            kinds = ("a model", "a deployment")
            raise self.error(
                f"output folder {stem.rsplit('/', 1)[0]!r} would hold {kinds[mine]} "
                f"({model}) and {kinds[other]} of the same name (line {slots[other]}); "
                "use {model_path} (deployments/owner/name vs owner/name) to keep them apart",
                *where("output"),
            )
        if not slots[mine]:
            slots[mine] = line

    def check_unique(self, key: str, stem: str, explicit: bool, line: int, label: str) -> None:
        clash = self.seen.admit(key, stem, explicit, line)
        if clash is not None:
            message, on_output = clash
            field = (f"{label}.output" if label else "output") if on_output else label
            raise self.error(message, line, field or None)


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    remember(cache, key, value, _CACHE_LIMIT)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")
