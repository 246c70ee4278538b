"""Digests of whole files (a trace's sources, a replay's original)."""

from __future__ import annotations

import hashlib
import os

from wskreplay.threads import Background

CHUNK = 1 << 22


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    chunk = bytearray(CHUNK)
    view = memoryview(chunk)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(chunk):
            h.update(view[:n])
    return h.hexdigest()


class DigestOnTheSide(Background[str]):
    """:func:`file_sha256` of ``path`` on a daemon thread, started now: reading and hashing
    let go of the GIL, so a long import hides most of it (a 1.15 GB recording: 0.6 s of
    SHA-256 and its reads). A daemon, so an import that fails does not wait for it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(file_sha256, path)
