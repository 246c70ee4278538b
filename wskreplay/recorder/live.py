"""``wskreplay record``: a live recording on Windows.

A thin layer: a real-time ETW session (the optional ``pyetwkit`` package, extra
``wskreplay[windows]``) delivers the recorder provider's events, converted here to the same
:class:`~wskreplay.recorder.etw_schema.RecorderEvent` objects the ``.etl`` reader yields;
``pktmon`` captures the packets into an ``.etl`` meanwhile. Events go to a crash-safe
journal as they arrive (recorder/journal.py); on Ctrl-C both stop and ``wskreplay import``
of the journal and the packets builds the trace (the packets' clock is aligned from the
data, as for an ``.etl`` plus a separate capture). On other systems it explains, in one
line, how to record an ``.etl`` instead. This layer is not exercised by the test suite,
which has no Windows; everything after the event conversion is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from wskreplay.errors import WskReplayError
from wskreplay.recorder.etw_schema import PROVIDER_NAME, RecorderEvent, decode


class NeedsWindows(WskReplayError):
    pass


def require_windows() -> None:
    if sys.platform != "win32":
        raise NeedsWindows(
            "live recording needs Windows (an ETW real-time session and pktmon); on this "
            f"system record an .etl on the Windows machine (pktmon start --trace -p "
            f"{PROVIDER_NAME} --capture, see docs/recording.md) and run 'wskreplay import'"
        )


def events_from_session(session: Any) -> Iterator[RecorderEvent]:
    """RecorderEvents from a started pyetwkit session (its events carry the TraceLogging
    event name, a timestamp in 100 ns FILETIME units and the decoded properties)."""
    for ev in session.events():
        if getattr(ev, "provider_name", PROVIDER_NAME) != PROVIDER_NAME:
            continue
        fields = dict(ev.properties)
        for key in ("ControlInfo", "Payload", "LocalAddress", "RemoteAddress"):
            value = fields.get(key)
            if isinstance(value, (bytes, bytearray)):
                fields[key] = bytes(value).hex()
        ts_ns = (int(ev.timestamp) - 116_444_736_000_000_000) * 100
        yield decode(ev.event_name, fields, ts_ns, path="live session", offset=None)


def record_live(out: str, *, extra_providers: list[str], capture: bool) -> None:
    """Record until Ctrl-C into a journal next to ``out`` (``OUT.journal``, crash-safe, see
    recorder/journal.py) and pktmon's ``OUT.packets.etl``, then import both into ``out``."""
    require_windows()
    try:
        from pyetwkit._core import EtwProvider, EtwSession  # type: ignore[import-not-found]
    except ImportError:
        raise WskReplayError(
            "live recording needs the pyetwkit package: pip install 'wskreplay[windows]'"
        ) from None
    from wskreplay.recorder.importer import ImportOptions, import_sources
    from wskreplay.recorder.journal import JournalWriter

    session = EtwSession("wskreplay-live")
    for name in [PROVIDER_NAME, *extra_providers]:
        session.add_provider(EtwProvider(name, name).with_level(5))
    journal_path, packets = f"{out}.journal", f"{out}.packets.etl"
    if capture:
        subprocess.run(["pktmon", "start", "--capture", "--file-name", packets], check=True)
    with JournalWriter(journal_path, qpc_frequency=_qpc_frequency()) as journal:
        session.start()
        try:
            for ev in events_from_session(session):
                journal.append(ev)
        except KeyboardInterrupt:
            pass
        finally:
            session.stop()
            if capture:
                subprocess.run(["pktmon", "stop"], check=True)
    if not journal.written:
        raise WskReplayError(f"no {PROVIDER_NAME} events arrived: is the driver instrumented?")
    inputs = [journal_path, packets] if capture else [journal_path]
    import_sources(inputs, ImportOptions()).write(out)
    for path in inputs:
        os.remove(path)


def _qpc_frequency() -> int:
    import ctypes

    value = ctypes.c_int64()
    ctypes.windll.kernel32.QueryPerformanceFrequency(ctypes.byref(value))  # type: ignore[attr-defined]
    return value.value
