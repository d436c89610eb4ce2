"""Stream raw manifest entries out of YAML or JSONL, one job at a time, with line numbers.

The readers only parse; `jobs.manifest` validates. A reader yields a `ManifestError`
for a problem confined to one entry (the caller may go on) and raises one when the
file cannot be read further (a YAML syntax error, a second document).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Literal, NamedTuple

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from jobs._json import MAX_DEPTH, DuplicateKeyError, decode, value_problem
from jobs.errors import ManifestError

__all__ = ["MAX_DEPTH", "MAX_NODES", "RawEntry", "read_jsonl", "read_yaml", "suggest"]

TOP_LEVEL_FIELDS = ("defaults", "jobs")
# Bounds on one entry (a job or the defaults), so a hostile file fails at once with one
# line instead of a RecursionError or an exhausted memory: nesting levels (MAX_DEPTH,
# shared with JSON), and values once every alias is expanded (a 500-byte YAML "billion
# laughs" expands to 10**9).
MAX_NODES = 1_000_000
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
                value = decode(text)
                problem = value_problem(text, value)
            except UnicodeDecodeError as exc:
                yield ManifestError(
                    f"not UTF-8 (byte {exc.object[exc.start]:#04x} at column {exc.start + 1}): "
                    "save the file as UTF-8",
                    path=source,
                    line=number,
                )
                continue
            except RecursionError:
                problem = f"nested deeper than {MAX_DEPTH} levels"
            except DuplicateKeyError as exc:
                problem = str(exc)
            except json.JSONDecodeError as exc:
                message = f"invalid JSON: {exc.msg} (column {exc.colno})"
                yield ManifestError(message, path=source, line=number)
                continue
            except ValueError as exc:
                yield ManifestError(f"invalid JSON: {exc}", path=source, line=number)
                continue
            if problem is not None:
                yield ManifestError(problem, path=source, line=number)
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
        except _RefusedError as exc:
            line = None if exc.problem_mark is None else exc.problem_mark.line + 1
            raise ManifestError(str(exc.problem), path=source, line=line) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            if exc.context_mark is not None and "quoted scalar" in (exc.context or ""):
                mark = exc.context_mark  # an unclosed quote: where it opened, not the end
            line = None if mark is None else mark.line + 1
            problem = " ".join(p for p in (exc.context, exc.problem) if p)
            raise ManifestError(f"invalid YAML: {problem}", path=source, line=line) from None
        except yaml.reader.ReaderError as exc:
            line = _line_at(path, exc.position)
            if "utf-8" in f"{exc.reason} {exc.encoding}".lower():
                problem = f"not UTF-8 ({exc.reason}): save the file as UTF-8"
            else:
                problem = f"invalid YAML: {exc.reason} (character {exc.character!r})"
            raise ManifestError(problem, path=source, line=line) from None
        except yaml.YAMLError as exc:
            raise ManifestError(f"invalid YAML: {exc}", path=source) from None
        except RecursionError:
            message = f"nested deeper than {MAX_DEPTH} levels"
            raise ManifestError(message, path=source) from None
        finally:
            loader.dispose()


def _line_at(path: Path, position: int) -> int:
    """Return the 1-based line holding byte ``position`` of ``path``, reading in chunks."""
    lines = 1
    with path.open("rb") as stream:
        while position > 0:
            chunk = stream.read(min(position, 1 << 20))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            position -= len(chunk)
    return lines


class _RefusedError(yaml.MarkedYAMLError):
    """Stop composing: an entry nests too deep, expands too far or refers to itself."""


class _StreamLoader(_Parser, Composer):  # type: ignore[misc]
    """A safe loader whose composer is driven one node at a time (``compose_node``)."""

    def __init__(self, stream: IO[bytes]) -> None:
        # At run time this is the parser's __init__; mypy only sees Composer's.
        super().__init__(stream)  # type: ignore[call-arg]
        self.anchors: dict[str, Node] = {}  # the C parser skips Composer.__init__
        self.depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        """Compose one node, keeping its expanded size and height within the bounds.

        Each collection is measured once, when composed: (size, height, whether a mapping
        at or under it repeats a key). An alias returns its anchor's node, measured
        already, so counting its size at every use bounds what construction and hashing
        will walk without walking it.
        """
        if self.check_event(yaml.ScalarEvent):
            return super().compose_node(parent, index)  # (1, 1, False), not stored
        alias = self.check_event(yaml.AliasEvent)
        if self.depth >= MAX_DEPTH and not alias:
            mark = self.peek_event().start_mark
            raise _RefusedError(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=mark)
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if node is None or isinstance(node, ScalarNode):
            return node
        measured = node.__dict__.get("_measure")
        if measured is None:
            if alias:
                raise _RefusedError(
                    problem="an alias refers to the value that contains it",
                    problem_mark=self.peek_event().start_mark,
                )
            measured = _measure(node)
            node.__dict__["_measure"] = measured
        size, height, _ = measured
        if size > MAX_NODES:
            raise _RefusedError(
                problem=f"expands to more than {MAX_NODES:,} values (aliases included)",
                problem_mark=node.start_mark,
            )
        if height + self.depth > MAX_DEPTH:
            raise _RefusedError(
                problem=f"nested deeper than {MAX_DEPTH} levels (aliases included)",
                problem_mark=node.start_mark,
            )
        return node

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
    duplicate = _duplicate_key(node, label, source)
    if duplicate is not None:
        return duplicate
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            name = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
            lines[name] = _line(key_node)
            _key_lines(value_node, name, lines, depth=3 if name == "models" else 1)
    try:
        value = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or node.start_mark
        message = f"invalid YAML value: {exc.problem}"
        return ManifestError(message, path=source, line=mark.line + 1, field=label)
    return RawEntry(kind, value, _line(node), label, lines)


def _key_lines(node: Node, prefix: str, lines: dict[str, int], depth: int) -> None:
    """Record the line of each key under ``node``, ``depth`` levels down (``input.seed``)."""
    if depth == 0 or not isinstance(node, MappingNode):
        return
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode):
            name = f"{prefix}.{key_node.value}"
            lines[name] = _line(key_node)
            _key_lines(value_node, name, lines, depth - 1)


_SCALAR = (1, 1, False)


def _measure(node: Node) -> tuple[int, int, bool]:
    """Return (size, height, repeats a key somewhere) of a collection whose children are."""
    children = _children(node)
    parts = [child.__dict__.get("_measure", _SCALAR) for child in children]
    repeats = any(part[2] for part in parts)
    if isinstance(node, MappingNode) and not repeats:
        keys = [(k.tag, k.value) for k, _ in node.value if isinstance(k, ScalarNode)]
        repeats = len(set(keys)) != len(keys)
    return (
        1 + sum(part[0] for part in parts),
        1 + max((part[1] for part in parts), default=0),
        repeats,
    )


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _duplicate_key(node: Node, label: str, source: str) -> ManifestError | None:
    """Return an error for the first mapping under ``node`` that repeats a key."""
    if not node.__dict__.get("_measure", _SCALAR)[2]:
        return None  # the composer saw no repeated key: skip the walk
    stack: list[tuple[Node, str]] = [(node, label)]
    seen: set[int] = set()
    while stack:
        current, where = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key_node, value_node in current.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                name = (key_node.tag, key_node.value)
                if name in lines:
                    # PyYAML would silently keep the last one; a typo'd copy should not win.
                    kind = "field" if current is node else "key"
                    return ManifestError(
                        f"duplicate {kind} (first defined at line {lines[name]})",
                        path=source,
                        line=_line(key_node),
                        field=f"{where}.{key_node.value}",
                    )
                lines[name] = _line(key_node)
                stack.append((value_node, f"{where}.{key_node.value}"))
        elif isinstance(current, SequenceNode):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(current.value))
    return None


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
