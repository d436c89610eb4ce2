"""The run's resumable state: an append-only JSONL journal, its writer and its replay.

``_records`` holds the format (one table of short field names), ``_replay`` the pure fold
of lines into one `JobState` per job, ``_writer`` the group-commit `Journal`.
"""

from engine._journal._lock import JournalLock, lock_path
from engine._journal._records import (
    FORMAT_VERSION,
    MAX_ERROR_CHARS,
    JournalEvent,
    JournalRecord,
)
from engine._journal._replay import JobState, Replay, journal_manifest, load_journal, replay
from engine._journal._writer import Journal, JournalStats

__all__ = [
    "FORMAT_VERSION",
    "MAX_ERROR_CHARS",
    "JobState",
    "Journal",
    "JournalEvent",
    "JournalLock",
    "JournalRecord",
    "JournalStats",
    "Replay",
    "journal_manifest",
    "load_journal",
    "lock_path",
    "replay",
]
