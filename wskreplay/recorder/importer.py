"""``wskreplay import``: sources in, one trace out.

Three ways in (see README): an ``.etl`` with the recorder's events and packets (one
clock); an ``.etl`` plus a pcap/pcapng (two clocks, aligned from the data); a capture alone
with ``infer_calls``. Then the user's selection (sockets, time window), the payload cap,
and the summary.
"""

from __future__ import annotations

import ipaddress
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import ntstatus, pcap
from wskreplay.formats.etl import EtlEvent, EtlFile
from wskreplay.formats.etl_packets import etl_frames, read_capture
from wskreplay.formats.tcpip import DecodeReport
from wskreplay.recorder.build import StreamLayout
from wskreplay.recorder.calls import recorded_from_events
from wskreplay.recorder.etw_import import trace_from_recording
from wskreplay.recorder.etw_schema import (
    PROVIDER_GUID,
    PROVIDER_NAME,
    RecorderEvent,
    from_etl_event,
)
from wskreplay.recorder.infer import InferOptions, infer_trace
from wskreplay.recorder.journal import is_journal, read_journal
from wskreplay.recorder.tcp import CaptureOptions
from wskreplay.trace import TraceWriter
from wskreplay.trace.digest import DigestOnTheSide
from wskreplay.trace.model import (
    COMPLETED,
    COMPLETION_UNKNOWN,
    NOT_COMPLETED,
    CallTable,
    Clock,
    Direction,
    Trace,
)


class Progress(Protocol):
    """Where an import reports how far it got (the CLI draws it; tests ignore it)."""

    def phase(self, name: str) -> None: ...

    def advance(self, done: int, total: int) -> None: ...


class NoProgress:
    def phase(self, name: str) -> None:
        pass

    def advance(self, done: int, total: int) -> None:
        pass


@dataclass(frozen=True)
class SocketFilter:
    """``ADDR``, ``ADDR:PORT``, ``:PORT``, ``[V6ADDR]:PORT`` or a bare IPv6 address; a
    socket matches when its local or its remote endpoint does."""

    address: str | None
    port: int | None

    @classmethod
    def parse(cls, text: str) -> SocketFilter:
        raw = text.strip()
        address: str | None
        port: str | None
        if raw.startswith("["):
            address, _, rest = raw[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
            if rest and not rest.startswith(":"):
                raise ValueError(text)
        elif raw.count(":") == 1:
            address, port = raw.split(":")
        else:
            address, port = raw, None
        try:
            addr = str(ipaddress.ip_address(address)) if address else None
            number = int(port) if port else None
        except ValueError:
            raise ValueError(text) from None
        if (addr is None and number is None) or (number is not None and not 0 <= number < 65536):
            raise ValueError(text)
        return cls(addr, number)

    def matches(self, address: str, port: int) -> bool:
        return (self.address is None or self.address == address) and (
            self.port is None or self.port == port
        )


@dataclass(frozen=True)
class ImportOptions:
    infer_calls: bool = False
    side: str = "client"
    idle_gap_ns: int = InferOptions.idle_gap_ns
    sockets: tuple[SocketFilter, ...] = ()
    window_ns: tuple[int | None, int | None] = (None, None)
    """Calls issued, segments and events in [from, until) ns after the trace's zero."""
    payload_cap: int | None = None
    redact: bool = False
    capture: CaptureOptions = field(default_factory=CaptureOptions)


Layouts = dict[tuple[int, Direction], StreamLayout]
RELEASE_EVERY = 64 << 20


@dataclass
class ImportResult:
    """The imported trace: sockets, calls, segments and events in ``trace``, streams as
    ``layouts`` (assembled only when written, a window at a time, or on request)."""

    trace: Trace
    layouts: Layouts
    summary: dict[str, Any] = field(default_factory=dict)
    release: Callable[[], None] = lambda: None
    """Drops the input's pages from memory (a mapped capture); called while writing."""

    def materialised(self) -> Trace:
        """The whole trace in memory, streams included."""
        trace = replace(self.trace)
        trace.streams = {k: v.materialise() for k, v in self.layouts.items()}
        return trace

    def write(self, path: str, *, redact: bool = False) -> None:
        trace = self.trace
        with TraceWriter(path, metadata=trace.metadata, clock=trace.clock, redact=redact) as w:
            w.add_sockets(trace.sockets.values())
            w.add_calls(trace.calls)
            w.flush()
            w.add_segments(trace.segments)
            w.flush()
            written = 0
            for layout in self.layouts.values():
                for start, end in layout.gaps():
                    w.add_stream_gap(layout.socket, layout.direction, start, end - start)
                for offset, data in layout.spans():
                    w.add_stream_data(layout.socket, layout.direction, offset, data)
                    written += len(data)
                    if written >= RELEASE_EVERY:
                        self.release()
                        written = 0
            w.add_events(trace.events)


def _is_etl(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return path.lower().endswith((".etl", ".zip")) and head[:2] != b"\x1f\x8b"


def import_sources(
    inputs: list[str], options: ImportOptions, progress: Progress | None = None
) -> ImportResult:
    progress = progress or NoProgress()
    for path in inputs:
        if not os.path.isfile(path):
            raise InputError(path, "no such file")
    digests = {p: DigestOnTheSide(p) for p in dict.fromkeys(inputs)}
    etls = [p for p in inputs if _is_etl(p)]
    journals = [p for p in inputs if p not in etls and is_journal(p)]
    captures = [p for p in inputs if p not in etls and p not in journals]
    if options.infer_calls:
        if len(inputs) != 1:
            raise InputError(None, f"--infer-calls takes one capture, got {len(inputs)} inputs")
        trace, layouts, report, release = _import_inferred(inputs[0], options, progress)
    elif journals:
        others = [p for p in inputs if p not in journals]
        if len(journals) != 1 or len(others) > 1:
            raise InputError(
                None,
                "import takes one journal from 'wskreplay record' and at most one capture "
                f"(got {len(journals)} journals and {len(others)} other inputs)",
            )
        trace, layouts, report, release = _import_journal(
            journals[0], others[0] if others else None, progress, options.capture
        )
    else:
        if len(etls) != 1 or len(captures) > 1:
            raise InputError(
                None,
                f"import takes one .etl holding {PROVIDER_NAME} events and at most one "
                f"pcap/pcapng (got {len(etls)} .etl and {len(captures)} captures); "
                "for a capture alone use --infer-calls",
            )
        trace, layouts, report, release = _import_recording(
            etls[0], captures[0] if captures else None, progress, options.capture
        )
    trace.metadata["sources"] = [
        {"path": os.path.basename(p), "sha256": digests[p].result(), "bytes": os.path.getsize(p)}
        for p in inputs
    ]
    progress.phase("selecting")
    trace, layouts = select(trace, layouts, options)
    if options.payload_cap is not None:
        cap_payload(trace, layouts, options.payload_cap)
    trace.metadata["import"] = {
        "infer_calls": options.infer_calls,
        "side": options.side if options.infer_calls else None,
        "sockets": [
            f"{f.address or '*'}:{f.port if f.port is not None else '*'}" for f in options.sockets
        ],
        "window_ns": list(options.window_ns),
        "payload_cap": options.payload_cap,
        "redacted": options.redact,
    }
    release()
    return ImportResult(trace, layouts, summarise(trace, layouts, report), release)


def _import_inferred(
    path: str, options: InferOptions | ImportOptions, progress: Progress
) -> tuple[Trace, Layouts, dict[str, Any], Callable[[], None]]:
    progress.phase(f"reading {os.path.basename(path)}")
    frames = _complete(read_capture(path))
    progress.phase("inferring calls")
    trace, layouts, decoded = infer_trace(
        frames,
        InferOptions(side=options.side, idle_gap_ns=options.idle_gap_ns, capture=options.capture),
    )
    if not trace.sockets:
        raise InputError(path, f"{no_connection_text(decoded)}: nothing to infer")
    trace.metadata.update(
        {
            "source": "import --infer-calls",
            "inferred": {
                "side": options.side,
                "idle_gap_ns": options.idle_gap_ns,
                "heuristic": "new-data segments; a call ends at PSH, an idle gap, or the "
                "other side's turn (wskreplay/recorder/infer.py)",
            },
        }
    )
    report = {
        "packets": len(frames),
        "capture_notes": dict(frames.notes or {}),
        "decode": decoded.as_dict(),
    }
    return trace, layouts, report, frames.release_pages


def no_connection_text(report: DecodeReport) -> str:
    """Why a capture gave no TCP connection: no TCP on the link types it holds, or frames
    that were not decoded (named by link type and reason)."""
    total = report.totals
    if not total.undecoded:
        return (
            f"no TCP connection in the capture ({total.read} frames read, "
            f"all decoded, {total.tcp} TCP)"
        )
    met = "; ".join(
        f"{row['name']} (link type {row['link_type']}): {row['read']} frames"
        + "".join(f", {n} {why}" for why, n in row["undecoded"].items())
        for row in report.as_dict()["link_types"]
    )
    return f"no TCP connection decoded from {total.read} frames ({met})"


def _complete(frames: pcap.Frames) -> pcap.Frames:
    """A capture read in full: a damaged one is an error here, never a partial import."""
    if frames.error is not None:
        raise frames.error
    return frames


def _qpc_converter(etl: EtlFile) -> Callable[[int, RecorderEvent], int]:
    """QPC values in events to UTC ns: by the log's own clock when it is QPC; otherwise
    relative to the event's time stamp, taken just after ``QpcReturn``."""
    header = etl.header
    if header.clock == "qpc":
        return lambda qpc, _ev: etl.to_ns(qpc)
    freq = header.perf_freq
    if freq <= 0:
        raise InputError(etl.path, f"logfile header QPC frequency {freq} is not positive", 0)
    return _qpc_from_event_time(freq)


def _qpc_from_event_time(freq: int) -> Callable[[int, RecorderEvent], int]:
    """QPC values to UTC ns relative to each event's own time stamp, which was taken just
    after its ``QpcReturn``."""

    def convert(qpc: int, ev: RecorderEvent) -> int:
        return ev.ts_ns - (ev.fields["QpcReturn"] - qpc) * 1_000_000_000 // freq

    return convert


def _import_recording(
    etl_path: str, capture_path: str | None, progress: Progress, capture: CaptureOptions
) -> tuple[Trace, Layouts, dict[str, Any], Callable[[], None]]:
    progress.phase(f"reading {os.path.basename(etl_path)}")
    etl = EtlFile(etl_path)
    events: list[RecorderEvent] = []

    def keep(ev: EtlEvent) -> None:
        decoded = from_etl_event(ev, etl_path)
        if decoded is not None:
            events.append(decoded)

    frames: pcap.Frames | None = etl_frames(
        etl_path, etl=etl, other=keep, progress=progress.advance
    )
    if not events:
        raise InputError(
            etl_path,
            f"no {PROVIDER_NAME} events (provider {{{PROVIDER_GUID}}}): was the provider "
            "enabled while recording (docs/recording.md)? For packets alone use --infer-calls",
        )
    same_clock = True
    assert frames is not None
    if capture_path is not None:
        if len(frames):
            raise InputError(
                capture_path,
                f"{os.path.basename(etl_path)} already holds {len(frames)} packets; "
                "give a separate capture only with an .etl that has none",
            )
        progress.phase(f"reading {os.path.basename(capture_path)}")
        frames = _complete(read_capture(capture_path))
        same_clock = False
    elif not len(frames):
        frames = None
    events.sort(key=lambda e: e.ts_ns)
    header = etl.header
    return _recording_trace(
        events,
        _qpc_converter(etl),
        frames,
        Clock(header.start_ns, header.clock, qpc_frequency=header.perf_freq),
        same_clock,
        capture_path or etl_path,
        {"source": "import", "os_build": header.os_build},
        progress,
        capture,
        frames.release_pages if frames is not None else etl.release_pages,
    )


def _import_journal(
    journal_path: str, capture_path: str | None, progress: Progress, capture: CaptureOptions
) -> tuple[Trace, Layouts, dict[str, Any], Callable[[], None]]:
    """A journal written by ``wskreplay record`` (recorder/journal.py), with the packets of
    a separate capture (pktmon's .etl or a pcap) on their own clock."""
    progress.phase(f"reading {os.path.basename(journal_path)}")
    journal = read_journal(journal_path)
    if not journal.events:
        raise InputError(journal_path, f"the journal holds no {PROVIDER_NAME} events")
    frames = None
    if capture_path is not None:
        progress.phase(f"reading {os.path.basename(capture_path)}")
        frames = _complete(read_capture(capture_path))
    zero = journal.events[0].ts_ns
    return _recording_trace(
        journal.events,
        _qpc_from_event_time(journal.qpc_frequency),
        frames,
        Clock(zero, "system-time", qpc_frequency=journal.qpc_frequency),
        False,
        capture_path,
        {"source": "record", "recovered": journal.metadata.get("recovered")},
        progress,
        capture,
        frames.release_pages if frames is not None else lambda: None,
    )


def _recording_trace(
    events: list[RecorderEvent],
    qpc_to_ns: Callable[[int, RecorderEvent], int],
    frames: pcap.Frames | None,
    clock: Clock,
    same_clock: bool,
    capture_path: str | None,
    metadata: dict[str, Any],
    progress: Progress,
    capture: CaptureOptions,
    release: Callable[[], None],
) -> tuple[Trace, Layouts, dict[str, Any], Callable[[], None]]:
    """Calls from the recorder's events, correlated with the wire when there are packets."""
    recorded = recorded_from_events(events, qpc_to_ns)
    progress.phase("correlating calls with the wire")
    trace, layouts, report = trace_from_recording(
        recorded,
        frames,
        zero_utc_ns=clock.zero_utc_ns,
        clock=clock,
        same_clock=same_clock,
        capture_path=capture_path,
        capture=capture,
    )
    trace.metadata.update(
        {
            **metadata,
            "completion_policy": report.completion_policy,
            "clock_alignment": report.clock or None,
            "correlation": {**recorded.counts, **report.counts},
        }
    )
    return (
        trace,
        layouts,
        {
            "packets": 0 if frames is None else len(frames),
            "capture_notes": dict(frames.notes or {}) if frames is not None else {},
            "correlation": {**recorded.counts, **report.counts},
            "clock": report.clock or {"sources": 1, "note": "no packets: wire correlation skipped"},
            **({"decode": report.decode.as_dict()} if report.decode is not None else {}),
        },
        release,
    )


def select(trace: Trace, layouts: Layouts, options: ImportOptions) -> tuple[Trace, Layouts]:
    """The sockets and time window the user asked for. Streams of kept sockets stay whole
    (call and segment offsets point into them)."""
    lo, hi = options.window_ns
    if not options.sockets and lo is None and hi is None:
        return trace, layouts
    keep = {
        sid
        for sid, s in trace.sockets.items()
        if not options.sockets
        or any(
            f.matches(s.local_addr, s.local_port) or f.matches(s.remote_addr, s.remote_port)
            for f in options.sockets
        )
    }

    def in_window(t: np.ndarray) -> np.ndarray:
        ok = np.ones(len(t), dtype=bool)
        if lo is not None:
            ok &= t >= lo
        if hi is not None:
            ok &= t < hi
        return ok

    sockets_col = trace.calls.column("socket")
    rows = np.isin(sockets_col, list(keep)) & in_window(trace.calls.column("issue_ns"))
    calls = trace.calls.take(rows)
    cols = calls.columns
    cols["seq"] = np.arange(len(calls))
    seg = trace.segments
    seg_rows = np.isin(seg.column("socket"), list(keep)) & in_window(seg.column("time_ns"))
    events = [
        e
        for e in trace.events
        if (e.socket is None or e.socket in keep)
        and (lo is None or e.time_ns >= lo)
        and (hi is None or e.time_ns < hi)
    ]
    out = Trace(
        metadata=dict(trace.metadata),
        clock=trace.clock,
        sockets={k: v for k, v in trace.sockets.items() if k in keep},
        calls=CallTable(cols, calls.control_blob),
        segments=seg.take(seg_rows),
        events=events,
    )
    out.metadata["selection"] = {
        "sockets_kept": len(keep),
        "sockets_total": len(trace.sockets),
        "calls_kept": len(calls),
        "calls_total": len(trace.calls),
    }
    return out, {k: v for k, v in layouts.items() if k[0] in keep}


def cap_payload(trace: Trace, layouts: Layouts, cap: int) -> None:
    """Keep at most ``cap`` bytes of each call's payload; the rest become gaps."""
    calls = trace.calls
    if not len(calls):
        return
    sock = calls.column("socket")
    start = calls.column("stream_offset").astype(np.int64)
    length = calls.column("length").astype(np.int64)
    accepted = ntstatus.success_mask(calls.column("status"))
    for (sid, direction), layout in layouts.items():
        if direction == Direction.IN:
            continue
        mine = (sock == sid) & (accepted == (direction == Direction.OUT)) & (length > cap)
        layout.holes += [
            (int(s + cap), int(min(s + n, layout.length)))
            for s, n in zip(start[mine], length[mine], strict=True)
            if s + cap < layout.length
        ]


def summarise(trace: Trace, layouts: Layouts, report: dict[str, Any]) -> dict[str, Any]:
    calls = trace.calls
    returned = Counter(ntstatus.describe(int(s)) for s in calls.column("status"))
    state = calls.column("completed")
    done = state == COMPLETED
    completed = Counter(ntstatus.describe(int(s)) for s in calls.column("completion_status")[done])
    out_bytes = sum(s.length for (_, d), s in layouts.items() if d == Direction.OUT)
    in_bytes = sum(s.length for (_, d), s in layouts.items() if d == Direction.IN)
    return {
        "sockets": len(trace.sockets),
        "calls": len(calls),
        "segments": len(trace.segments),
        "bytes_out": out_bytes,
        "bytes_in": in_bytes,
        "returned": dict(returned.most_common()),
        "completed": dict(completed.most_common()),
        "outstanding": int((state == NOT_COMPLETED).sum()),
        "completion_unknown": int((state == COMPLETION_UNKNOWN).sum()),
        "completion_policy": trace.metadata.get("completion_policy", {}).get("policy"),
        **report,
    }
