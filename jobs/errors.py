"""Define `ManifestError`: every manifest problem, located by file, line and field."""

from __future__ import annotations

__all__ = ["MAX_ERROR", "ManifestError", "shorten"]


class ManifestError(ValueError):
    """Raise when a manifest cannot be turned into jobs.

    ``str()`` reads ``path:line: field: message`` (``line`` and ``field`` are left out
    when unknown), so the CLI prints it as is, without a traceback. It is always one
    line: control characters that came from the manifest (a key with a newline) are
    shown escaped.
    """

    path: str
    line: int | None
    field: str | None
    message: str

    def __init__(
        self,
        message: str,
        *,
        path: str,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        if self.field:
            return _one_line(f"{where}: {self.field}: {self.message}")
        return _one_line(f"{where}: {self.message}")

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments defeat the default pickling of exceptions; errors cross
        # process boundaries in the CLI's tests, so keep them picklable.
        return (_rebuild, (self.message, self.path, self.line, self.field))


MAX_ERROR = 1000  # characters of one error line; a manifest value can be megabytes
_TAIL = 200  # kept from the end of a long line: the end often says what to do


def shorten(text: str, limit: int = MAX_ERROR) -> str:
    """Return ``text`` cut in the middle to at most about ``limit`` characters.

    Every error line goes through here (`ManifestError`, and the CLI for the rest), so
    no message can echo an unbounded value.
    """
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"{text[: limit - _TAIL]} ...[{cut} characters cut]... {text[-_TAIL:]}"


def _one_line(text: str) -> str:
    text = shorten(text, MAX_ERROR * 2)  # before escaping: a bounded walk
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shorten(text)


def _rebuild(message: str, path: str, line: int | None, field: str | None) -> ManifestError:
    return ManifestError(message, path=path, line=line, field=field)
