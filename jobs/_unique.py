"""Remember every job's key and output namespace while a manifest streams by.

Private to `jobs._builder`. Memory is one short entry per job (none more for a job
writing to its own key); the rules are `jobs.names`'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jobs.names import ENGINE_FILES, fold, roots

__all__ = ["Seen"]

_HASH_KEY_RE = re.compile(r"j[0-9a-f]{16}")
_RESERVED = 0  # the line of the engine's own names


@dataclass(slots=True)
class Seen:
    """Remember each key's line and each output stem's namespace, to name both lines.

    A job writing to its key (the default output, a key without capitals) costs one
    entry: the line is stored negated so a stem can be looked up among the keys without
    a second entry. Other stems are stored folded (`jobs.names.fold`); ``roots`` maps
    each stem that an earlier stem (or one of its folders) lies under to that job's line.
    """

    keys: dict[int | str, int] = field(default_factory=dict)
    stems: dict[str, int] = field(default_factory=dict)
    roots: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for stem in ENGINE_FILES.reserved_stems:
            self.stems[stem] = _RESERVED

    def first_key_line(self, key: int | str) -> int | None:
        line = self.keys.get(key)
        return None if line is None else abs(line)

    def stem_line(self, folded: str) -> int | None:
        line = self.stems.get(folded)
        if line is None:
            compact = _compact(folded)
            if self.keys.get(compact, 0) < 0:
                line = -self.keys[compact]
        return line

    def add(
        self, key: str, compact: int | str, stem: str, folded: str, above: list[str], *, line: int
    ) -> None:
        if stem == key == folded:
            self.keys[compact] = -line
        else:
            self.keys[compact] = line
            self.stems[folded] = line
        for root in above:
            self.roots.setdefault(root, line)

    def admit(self, key: str, stem: str, explicit: bool, line: int) -> tuple[str, bool] | None:
        """Remember a job, or return why it clashes and whether its output is to blame."""
        compact = _compact(key)
        first = self.first_key_line(compact)
        if first is not None:
            if explicit:
                return f"duplicate job id {key!r} (first defined at line {first})", False
            return f"duplicate job: same model and input as line {first} (key {key})", False
        folded = fold(stem)
        if folded.startswith(ENGINE_FILES.stamp_prefix):
            return (
                f"output {stem!r} would take the name of the engine's {ENGINE_FILES.stamp}; "
                "choose another id or output",
                True,
            )
        # A stem that is its key: the key was just found new, so only another job's
        # custom output can match it.
        first = self.stems.get(folded) if stem == key == folded else self.stem_line(folded)
        if first is not None:
            return _meets(stem, folded, first, same=True), True
        above = roots(stem)
        for root in above:
            first = self.stem_line(root)
            if first is not None:
                return _meets(stem, root, first), True
        first = self.roots.get(folded)
        if first is not None:
            return (
                f"output {stem!r} owns every {stem}_<n>.* and {stem}.* name, and the output "
                f"of the job at line {first} is one of them: its files could meet this "
                "job's; choose another id or output",
                True,
            )
        self.add(key, compact, stem, folded, above, line=line)
        return None


def _compact(key: str) -> int | str:
    """Return a hash-shaped key as an int: 36 bytes instead of 66, per job remembered."""
    if len(key) == 17 and _HASH_KEY_RE.fullmatch(key):
        return int(key[1:], 16)
    return key


def _meets(stem: str, other: str, first: int, *, same: bool = False) -> str:
    if first == _RESERVED:
        taken = ", ".join(n for n in ENGINE_FILES.at_root if n.startswith(f"{other}."))
        return f"output {stem!r} could take the engine's {taken}; choose another id or output"
    if same:
        return f"output {stem!r} is also the output of the job at line {first}"
    return (
        f"output {stem!r} lies among the names of the job at line {first}, whose output "
        f"{other!r} owns every {other}_<n>.* and {other}.* name: their files could meet; "
        "choose another id or output"
    )
