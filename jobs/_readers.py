"""Stream raw manifest entries out of YAML or JSONL, one job at a time, with line numbers.

The readers only parse; `jobs.manifest` validates. A reader yields a `ManifestError`
for a problem confined to one entry (the caller may go on) and raises one when the
file cannot be read further (a YAML syntax error, a second document).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Literal, NamedTuple

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from jobs.errors import ManifestError

__all__ = ["RawEntry", "read_jsonl", "read_yaml", "suggest"]

TOP_LEVEL_FIELDS = ("defaults", "jobs")
_NO_LINES: Mapping[str, int] = MappingProxyType({})  # JSONL: every field is on the job's line

# libyaml parses about ten times faster than the pure-Python parser; both give marks.
_Parser: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class RawEntry(NamedTuple):
    """One parsed but unchecked entry: the ``defaults`` block or one job.

    A named tuple, not a frozen dataclass: one is built per manifest line, and a frozen
    dataclass's ``__init__`` (``object.__setattr__`` per field) costs 1.25 us to this 0.3.
    """

    kind: Literal["defaults", "job"]
    value: object
    line: int
    label: str  # "jobs[3]" or "defaults" in YAML; "" in JSONL, where the line is the job
    field_lines: Mapping[str, int]


def suggest(name: object, known: tuple[str, ...]) -> str:
    """Return a " (did you mean 'x'?)" hint for a misspelt field name, or ""."""
    close = difflib.get_close_matches(str(name).lower(), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_jsonl(path: Path, source: str) -> Iterator[RawEntry | ManifestError]:
    """Yield one entry per non-blank line; memory is one line at a time."""
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                value = _decode(text)
            except UnicodeDecodeError as exc:
                yield ManifestError(f"not UTF-8: {exc.reason}", path=source, line=number)
                continue
            except json.JSONDecodeError as exc:
                message = f"invalid JSON: {exc.msg} (column {exc.colno})"
                yield ManifestError(message, path=source, line=number)
                continue
            except ValueError as exc:
                yield ManifestError(f"invalid JSON: {exc}", path=source, line=number)
                continue
            yield RawEntry("job", value, number, "", _NO_LINES)


def read_yaml(path: Path, source: str) -> Iterator[RawEntry | ManifestError]:
    """Yield the ``defaults`` block, then each item of ``jobs``, composed one at a time.

    Walking the event stream (instead of ``yaml.safe_load``) keeps memory at one job's
    nodes however long the ``jobs`` list is; only anchored nodes are kept, for aliases.
    """
    with path.open("rb") as stream:
        loader = _StreamLoader(stream)
        try:
            yield from _walk(loader, source)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = None if mark is None else mark.line + 1
            problem = " ".join(p for p in (exc.context, exc.problem) if p)
            raise ManifestError(f"invalid YAML: {problem}", path=source, line=line) from None
        except yaml.YAMLError as exc:
            raise ManifestError(f"invalid YAML: {exc}", path=source) from None
        finally:
            loader.dispose()


class _StreamLoader(_Parser, Composer):  # type: ignore[misc]
    """A safe loader whose composer is driven one node at a time (``compose_node``)."""

    def __init__(self, stream: IO[bytes]) -> None:
        # At run time this is the parser's __init__; mypy only sees Composer's.
        super().__init__(stream)  # type: ignore[call-arg]
        self.anchors: dict[str, Node] = {}  # the C parser skips Composer.__init__

    def next_node(self) -> Node:
        """Compose the node that starts at the next event, consuming its events."""
        # The index only matters to path resolvers, which a safe loader has none of.
        node = self.compose_node(None, 0)
        assert node is not None  # None only at the end of a document, never asked for here
        return node


def _walk(loader: _StreamLoader, source: str) -> Iterator[RawEntry | ManifestError]:
    loader.get_event()  # StreamStartEvent
    if loader.check_event(yaml.StreamEndEvent):
        return  # an empty file: the caller reports "no jobs"
    loader.get_event()  # DocumentStartEvent
    if not loader.check_event(yaml.MappingStartEvent):
        node = loader.next_node()
        raise ManifestError(
            f"the top level must be a mapping with a 'jobs' list, not {_describe(node)}",
            path=source,
            line=_line(node),
        )
    loader.get_event()
    seen: dict[str, int] = {}
    while not loader.check_event(yaml.MappingEndEvent):
        key_node = loader.next_node()
        key = key_node.value if isinstance(key_node, ScalarNode) else None
        line = _line(key_node)
        if key in seen:
            loader.next_node()
            yield ManifestError(
                f"duplicate top-level field {key!r} (first defined at line {seen[key]})",
                path=source,
                line=line,
            )
        elif key == "defaults":
            seen[key] = line
            if "jobs" in seen:
                loader.next_node()
                yield ManifestError(
                    "'defaults' must come before 'jobs': jobs are read as a stream",
                    path=source,
                    line=line,
                )
            else:
                yield _entry(loader, "defaults", "defaults", source)
        elif key == "jobs":
            seen[key] = line
            yield from _jobs(loader, source)
        else:
            loader.next_node()
            yield ManifestError(
                f"unknown top-level field {key!r}{suggest(key, TOP_LEVEL_FIELDS)}",
                path=source,
                line=line,
            )
    loader.get_event()  # MappingEndEvent
    loader.get_event()  # DocumentEndEvent
    if not loader.check_event(yaml.StreamEndEvent):
        event = loader.peek_event()
        raise ManifestError(
            "a manifest is one YAML document; found a second one",
            path=source,
            line=event.start_mark.line + 1,
        )


def _jobs(loader: _StreamLoader, source: str) -> Iterator[RawEntry | ManifestError]:
    if not loader.check_event(yaml.SequenceStartEvent):
        node = loader.next_node()
        yield ManifestError(
            f"must be a list of jobs, not {_describe(node)}",
            path=source,
            line=_line(node),
            field="jobs",
        )
        return
    loader.get_event()
    index = 0
    while not loader.check_event(yaml.SequenceEndEvent):
        yield _entry(loader, "job", f"jobs[{index}]", source)
        index += 1
    loader.get_event()


def _entry(
    loader: _StreamLoader, kind: Literal["defaults", "job"], label: str, source: str
) -> RawEntry | ManifestError:
    node = loader.next_node()
    lines: dict[str, int] = {}
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            name = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
            if name in lines:
                # PyYAML would silently keep the last one; a typo'd copy should not win.
                return ManifestError(
                    f"duplicate field (first defined at line {lines[name]})",
                    path=source,
                    line=_line(key_node),
                    field=f"{label}.{name}",
                )
            lines[name] = _line(key_node)
            if name == "input" and isinstance(value_node, MappingNode):
                for input_key, _ in value_node.value:
                    if isinstance(input_key, ScalarNode):
                        lines[f"input.{input_key.value}"] = _line(input_key)
    try:
        value = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or node.start_mark
        message = f"invalid YAML value: {exc.problem}"
        return ManifestError(message, path=source, line=mark.line + 1, field=label)
    return RawEntry(kind, value, _line(node), label, lines)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _describe(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    if node.tag.endswith(":null"):
        return "null"
    return f"the scalar {node.value!r}"


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON; use a finite number or a string")


# One decoder for all lines: json.loads builds a new one per call when given a hook.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_SCAN: Callable[[str, int], tuple[object, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _decode(text: str) -> object:
    """Return the JSON value of one line; raise what `json.JSONDecoder.decode` raises."""
    # The C scanner alone: decode()'s Python wrapper costs as much again on every line.
    # Anything unusual (leading blanks, trailing data, an error) takes decode() itself,
    # for its exact message.
    try:
        value, end = _SCAN(text, 0)
    except (StopIteration, ValueError):
        return _DECODER.decode(text)
    if end != len(text) and not text[end:].isspace():
        return _DECODER.decode(text)
    return value
