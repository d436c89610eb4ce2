"""Append to a journal forever, printing each key once its durable append returns.

Run by ``test_state_crash.py`` and killed with SIGKILL at a random moment:
``python journal_child.py JOURNAL PREFIX``.
"""

from __future__ import annotations

import sys

import anyio

from engine._journal import Journal, JournalRecord


async def main(path: str, prefix: str) -> None:
    async with Journal(path, flush_interval=0.001) as journal:
        i = 0
        while True:
            key = f"{prefix}-{i}"
            # Long non-durable lines between durable ones widen the window for a torn write.
            await journal.append(
                JournalRecord.failed(
                    f"{key}-noise",
                    prediction_id=None,
                    error="x" * 400,
                    error_class="E",
                    permanent=False,
                    attempt=1,
                )
            )
            await journal.append(
                JournalRecord.created(key, prediction_id=f"p-{key}", attempt=1), durable=True
            )
            print(key, flush=True)
            i += 1


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2])
