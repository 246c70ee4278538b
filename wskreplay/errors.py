"""The one error type that user-facing failures raise.

Every parser reports bad input as a :class:`InputError` naming the file, the byte offset
(or record) and what was expected, so the CLI can print it on one line and exit 2.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class WskReplayError(Exception):
    """Base class of every error wskreplay reports to a user instead of a traceback."""


class InputError(WskReplayError):
    """A file (or argument) is not what it must be."""

    def __init__(self, path: str | None, what: str, offset: int | None = None) -> None:
        self.path = path
        self.offset = offset
        self.what = what
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = [self.path] if self.path else []
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        return ": ".join([*where, self.what])


@contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """An :class:`InputError` raised inside without a file (by what judges a trace as a
    whole, the replay plan say) names ``path``."""
    try:
        yield
    except InputError as exc:
        if exc.path is not None:
            raise
        raise InputError(os.fspath(path), exc.what, exc.offset) from None


class OutputError(WskReplayError):
    """A file could not be written (disk full, no permission): names the file and what is
    left of it."""

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        super().__init__(f"{path}: {what}")


class TargetError(WskReplayError):
    """A replay target could not be set up or refused the replay (no root for network
    namespaces, a tool missing, an agent that rejected us); the message says which."""


class Terminated(BaseException):
    """SIGTERM turned into an exception while a replay holds resources, so its cleanup runs
    as it does for Ctrl-C (not an Exception: nothing may swallow it)."""
