"""The recording journal: what ``wskreplay record`` writes while the driver runs, so a
machine that crashes mid-recording loses at most the last fraction of a second.

A journal is a .wskt file whose EVENTS blocks hold the recorder's contract events as they
arrived (kind ``recorder``: the event's name and fields), flushed to the OS every
``FLUSH_EVENTS`` events or ``FLUSH_INTERVAL_S`` seconds, whichever comes first. Every block
is whole or absent after a crash, so ``wskreplay verify`` and ``recover`` work on a journal
as on any trace, and ``wskreplay import JOURNAL [CAPTURE]`` builds the trace from it (the
same code as an .etl import; the contract's checks run again on every event read back).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from wskreplay.errors import InputError
from wskreplay.formats.wskt import FILE_HEADER, WsktFile
from wskreplay.recorder.etw_schema import PROVIDER_NAME, SCHEMA_VERSION, RecorderEvent, decode
from wskreplay.trace import TraceReader, TraceWriter
from wskreplay.trace.model import Clock, Event

KIND = "recorder"
FLUSH_EVENTS = 256
FLUSH_INTERVAL_S = 0.1
_BYTES_FIELDS = ("ControlInfo", "Payload", "LocalAddress", "RemoteAddress")


@dataclass
class Journal:
    """A journal read back: its events in time order and the QPC frequency they use."""

    path: str
    events: list[RecorderEvent]
    qpc_frequency: int
    metadata: dict[str, Any]


class JournalWriter:
    """Appends contract events to a journal. A block is written when ``flush_events`` are
    pending, and a background thread writes what is pending every ``flush_interval_s``, so
    events that arrived before a quiet spell are on disk even if no other event follows."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        qpc_frequency: int,
        metadata: dict[str, Any] | None = None,
        flush_events: int = FLUSH_EVENTS,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        journal = {"provider": PROVIDER_NAME, "schema_version": SCHEMA_VERSION}
        self._writer = TraceWriter(
            path,
            metadata={**(metadata or {}), "journal": journal},
            clock=Clock(0, "system-time", qpc_frequency=qpc_frequency),
        )
        self.flush_events = flush_events
        self._pending: list[Event] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.written = 0
        """Events flushed to the OS so far: these survive the process being killed."""
        self._flusher = threading.Thread(
            target=self._flush_every, args=(flush_interval_s,), daemon=True
        )
        self._flusher.start()

    def _flush_every(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.flush()

    def append(self, event: RecorderEvent) -> None:
        with self._lock:
            self._pending.append(
                Event(event.ts_ns, KIND, None, {"n": event.name, "f": event.fields})
            )
            full = len(self._pending) >= self.flush_events
        if full:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._writer.add_events(self._pending)
                self.written += len(self._pending)
                self._pending = []

    def close(self) -> None:
        self._stop.set()
        self._flusher.join()
        self.flush()
        self._writer.close()

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_journal(path: str) -> bool:
    """Whether ``path`` is a .wskt journal (a damaged one included): its first block, the
    META block, says so."""
    try:
        with WsktFile(path) as f:
            body = f.body(f.block_at(FILE_HEADER.size))
    except InputError:
        return False
    meta = body.get("metadata") if isinstance(body, dict) else None
    return isinstance(meta, dict) and isinstance(meta.get("journal"), dict)


def read_journal(path: str) -> Journal:
    """The events of an intact journal. One the recorder did not close (it was killed, the
    machine crashed) is refused with the advice to recover it first: reading on past damage
    would present part of a recording as the whole."""
    with TraceReader(path) as reader:
        metadata = dict(reader.metadata)
        frequency = reader.clock.qpc_frequency
        records = reader.events()
    if not isinstance(frequency, int) or frequency <= 0:
        raise InputError(path, f"journal QPC frequency {frequency!r} is not a positive integer")
    events = []
    for i, record in enumerate(records):
        name, fields = record.attrs.get("n"), record.attrs.get("f")
        if record.kind != KIND or not isinstance(name, str) or not isinstance(fields, dict):
            raise InputError(path, f"journal event {i} is not a recorder event")
        wire = {k: v.hex() if k in _BYTES_FIELDS and isinstance(v, bytes) else v
                for k, v in fields.items()}  # fmt: skip
        try:
            events.append(decode(name, wire, record.time_ns, path=path, offset=None))
        except (ValueError, TypeError) as exc:
            raise InputError(path, f"journal event {i} ({name}): {exc}") from None
    events.sort(key=lambda e: e.ts_ns)
    return Journal(path, events, frequency, metadata)
