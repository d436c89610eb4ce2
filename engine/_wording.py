"""Say counts as a person would: "1 problem", "2 problems", no "s" in brackets.

The one home for how the command line words a count; every message that counts
something reads `plural` from here.
"""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, noun: str, plural_noun: str | None = None) -> str:
    """Return ``n`` and ``noun``, the noun in the plural unless ``n`` is 1.

    ``plural_noun`` is for nouns that do not just add an "s" ("retry", "retries").
    """
    if n == 1:
        return f"1 {noun}"
    return f"{n} {plural_noun or noun + 's'}"
