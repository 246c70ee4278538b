"""A trace from recorded calls plus (optionally) the packets they produced.

Matching rules:

- a socket is matched to the captured connection with the same two endpoints; the socket's
  local endpoint says which direction is its outbound stream;
- call ``i`` of a socket owns bytes [stream_offset, stream_offset + Length) of the outbound
  stream (calls the transport refused own bytes of the UNSENT stream instead);
- the bytes a call's event carried are checked against the wire where the wire has them; a
  disagreement is counted (``payload_mismatches``) and the call's own bytes are kept;
- calls none of whose bytes were seen on the wire, and wire bytes past the last call, are
  counted, and their bytes kept where known;
- a wire stream whose SYN the capture missed is renumbered from the calls' bytes found in
  it (:func:`realign_without_syn`);
- with two clocks (packets from a separate capture) the capture is moved onto the recorder's
  clock by :func:`~wskreplay.recorder.correlate.align_clocks` over payload-verified calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wskreplay.errors import InputError
from wskreplay.formats import ntstatus, pcap
from wskreplay.formats.tcpip import DecodeReport
from wskreplay.recorder import tcp
from wskreplay.recorder.build import (
    StreamLayout,
    connection_segments,
    endpoint_text,
    wire_events,
)
from wskreplay.recorder.calls import Recorded, RecordedCall
from wskreplay.recorder.correlate import (
    NEVER,
    WireView,
    align_clocks,
    covered_bytes,
    infer_completion_policy,
    merge_intervals,
)
from wskreplay.trace.model import CallTable, Clock, Direction, Event, SegmentTable, Trace


@dataclass
class _Match:
    socket: int
    conn: tcp.Connection
    local_is_client: bool

    @property
    def out(self) -> tcp.Direction:
        return self.conn.to_server if self.local_is_client else self.conn.to_client

    @property
    def inbound(self) -> tcp.Direction:
        return self.conn.to_client if self.local_is_client else self.conn.to_server


@dataclass
class CorrelationReport:
    counts: dict[str, int] = field(default_factory=dict)
    clock: dict[str, Any] = field(default_factory=dict)
    completion_policy: dict[str, Any] = field(default_factory=dict)
    decode: DecodeReport | None = None
    """What the capture's frames were (None without packets)."""


def _match_sockets(recorded: Recorded, reassembly: tcp.Reassembly) -> list[_Match]:
    by_pair = {}
    for conn in reassembly.connections:
        by_pair.setdefault((conn.client_text, conn.server_text), conn)
    matches = []
    used = set()
    for sid, sock in recorded.sockets.items():
        local = endpoint_text(sock.local_addr, sock.local_port)
        remote = endpoint_text(sock.remote_addr, sock.remote_port)
        for key, is_client in (((local, remote), True), ((remote, local), False)):
            conn = by_pair.get(key)
            if conn is not None and id(conn) not in used:
                used.add(id(conn))
                matches.append(_Match(sid, conn, is_client))
                break
    return matches


REALIGN_SEARCH_BYTES = 64 << 20
REALIGN_PROBE = 32


def realign_without_syn(calls: list[RecordedCall], m: _Match, buffer: memoryview) -> int | None:
    """When the capture missed the outbound SYN, its stream is numbered from the first byte
    it saw, not from the connection's first. Find the calls' bytes in the first
    ``REALIGN_SEARCH_BYTES`` of the wire and renumber the wire to the calls' offsets.
    Returns the shift, or None when no call's bytes were found (then nothing changes)."""
    wire = m.out
    n = min(wire.length, REALIGN_SEARCH_BYTES)
    if not n:
        return None
    seen = bytes(StreamLayout.of(0, Direction.OUT, n, wire, buffer).window(0, n))
    probes = [c for c in calls if len(c.payload) >= 8][:16]
    for k, call in enumerate(probes):
        found = seen.find(call.payload[:REALIGN_PROBE])
        shift = call.stream_offset - found
        if found < 0 or shift < 0:
            continue
        others = [c for c in probes[k + 1 :] if c.stream_offset - shift + len(c.payload) <= n]
        if all(
            seen[c.stream_offset - shift : c.stream_offset - shift + len(c.payload)] == c.payload
            for c in others[:4]
            if c.stream_offset >= shift
        ):
            if shift:
                wire.shift(shift, m.inbound)
            return shift
    return None


VERIFY_BYTES, VERIFY_CALLS = 16 << 20, 1024
"""Calls compared with the wire at a time (then the capture's pages are released): reading a
call's pieces maps the pages around them too, so short calls far apart map far more than
their bytes."""


def _verify_payloads(
    calls: list[RecordedCall], wire: tcp.Direction, buffer: memoryview, release: Callable[[], None]
) -> np.ndarray:
    """Per call: 1 its captured bytes equal the wire's, -1 they differ, 0 not comparable."""
    p = wire.pieces
    cov_s, cov_e = merge_intervals(p.start, p.start + p.length)
    lo = np.array([c.stream_offset for c in calls], dtype=np.int64)
    hi = lo + np.array([len(c.payload) for c in calls], dtype=np.int64)
    full = (covered_bytes(cov_s, cov_e, lo, hi) == hi - lo) & (hi > lo)
    result = np.zeros(len(calls), np.int8)
    if not full.any():
        return result
    layout = StreamLayout.of(0, Direction.OUT, int(hi.max()), wire, buffer)
    todo = np.flatnonzero(full)
    length = hi[todo] - lo[todo]
    ends = np.cumsum(length)
    start = 0
    while start < len(todo):
        before = int(ends[start] - length[start])
        stop = int(np.searchsorted(ends, before + VERIFY_BYTES, side="right"))
        stop = max(start + 1, min(stop, start + VERIFY_CALLS))
        some = todo[start:stop]
        seen = np.frombuffer(layout.windows(lo[some], hi[some]), np.uint8)
        wanted = np.frombuffer(b"".join(calls[i].payload for i in some.tolist()), np.uint8)
        differ = np.add.reduceat(seen != wanted, ends[start:stop] - length[start:stop] - before)
        result[some] = np.where(differ > 0, -1, 1)
        release()
        start = stop
    return result


def trace_from_recording(
    recorded: Recorded,
    frames: pcap.Frames | None,
    *,
    zero_utc_ns: int,
    clock: Clock,
    same_clock: bool,
    capture_path: str | None = None,
    capture: tcp.CaptureOptions | None = None,
) -> tuple[Trace, dict[tuple[int, Direction], StreamLayout], CorrelationReport]:
    """The trace (streams as layouts, written without being assembled) and the report."""
    report = CorrelationReport()
    counts = report.counts
    calls = recorded.calls
    by_socket: dict[int, list[int]] = {}
    for i, c in enumerate(calls):
        by_socket.setdefault(c.socket, []).append(i)
    reassembly = tcp.reassemble(frames, capture) if frames is not None else None
    if reassembly is not None:
        report.decode = reassembly.report
    matches = _match_sockets(recorded, reassembly) if reassembly is not None else []
    matched = {m.socket: m for m in matches}
    views: dict[int, WireView] = {}
    verified = np.zeros(len(calls), np.int8)
    if reassembly is not None:
        seg = reassembly.segments
        realigned = 0
        for m in matches:
            rows = by_socket.get(m.socket, [])
            accepted = [i for i in rows if calls[i].accepted]
            if not m.out.syn and accepted:
                shift = realign_without_syn([calls[i] for i in accepted], m, reassembly.buffer)
                realigned += shift or 0
            views[m.socket] = WireView.of(seg, m.out, m.inbound)
            if accepted:
                verified[accepted] = _verify_payloads(
                    [calls[i] for i in accepted],
                    m.out,
                    reassembly.buffer,
                    reassembly.frames.release_pages,
                )
        counts["connections_in_capture"] = len(reassembly.connections)
        counts["connections_without_socket"] = len(reassembly.connections) - len(matches)
        counts["sockets_without_connection"] = len(recorded.sockets) - len(matches)
        counts["payload_verified_calls"] = int((verified == 1).sum())
        counts["payload_mismatches"] = int((verified == -1).sum())
        counts["stream_bytes_before_capture"] = realigned
        if recorded.sockets and not matches:
            raise InputError(
                capture_path,
                f"no connection in the capture has the endpoints of any of the "
                f"{len(recorded.sockets)} recorded sockets: the capture and the recording "
                "do not match",
            )

    issue = np.array([c.issue_ns for c in calls], dtype=np.int64)
    length = np.array([c.length for c in calls], dtype=np.int64)
    offset = np.array([c.stream_offset for c in calls], dtype=np.int64)
    completion = np.array(
        [NEVER if c.completion_ns is None else c.completion_ns for c in calls], dtype=np.int64
    )
    first_wire = np.full(len(calls), NEVER, np.int64)
    last_wire = np.full(len(calls), NEVER, np.int64)
    acked = np.full(len(calls), NEVER, np.int64)
    for sid, view in views.items():
        rows = np.array([i for i in by_socket.get(sid, []) if calls[i].accepted], dtype=np.int64)
        if not len(rows):
            continue
        nonempty = rows[length[rows] > 0]
        first_wire[nonempty] = view.first_sent(offset[nonempty])
        last_wire[nonempty] = view.first_sent(offset[nonempty] + length[nonempty] - 1)
        acked[nonempty] = view.acked(offset[nonempty] + length[nonempty])

    sent_then_completed = np.array(
        [
            c.status == ntstatus.STATUS_PENDING
            and c.completion_status is not None
            and ntstatus.is_success(c.completion_status)
            for c in calls
        ],
        dtype=bool,
    )
    shift = 0
    if reassembly is not None:
        if same_clock:
            report.clock = {"sources": 1, "offset_ns": 0, "method": "one clock (same .etl)"}
        else:
            ok = verified == 1
            alignment = align_clocks(
                issue[ok],
                first_wire[ok],
                np.where(sent_then_completed, completion, NEVER)[ok],
                last_wire[ok],
            )
            if alignment is None:
                raise InputError(
                    capture_path,
                    "cannot align the capture's clock with the recording: no call's bytes "
                    "were found on the wire with matching content",
                )
            report.clock = {"sources": 2, **alignment.as_dict()}
            shift = -alignment.offset_ns
            for arr in (first_wire, last_wire, acked):
                known = arr != NEVER
                arr[known] += shift
    policy_rows = sent_then_completed & (completion != NEVER) & (length > 0)
    report.completion_policy = infer_completion_policy(
        np.where(policy_rows, completion, NEVER),
        np.where(policy_rows, last_wire, NEVER),
        np.where(policy_rows, acked, NEVER),
    )

    trace = Trace(clock=clock)
    trace.sockets = {sid: _shift_socket(s, zero_utc_ns) for sid, s in recorded.sockets.items()}
    trace.calls = _call_table(calls, zero_utc_ns)
    trace.events = [
        Event(e.time_ns - zero_utc_ns, e.kind, e.socket, e.attrs) for e in recorded.events
    ]
    layouts: dict[tuple[int, Direction], StreamLayout] = {}
    segment_tables = []
    not_on_wire = partly = unexplained = 0
    for sid in recorded.sockets:
        rows = by_socket.get(sid, [])
        acc = [calls[i] for i in rows if calls[i].accepted]
        ref = [calls[i] for i in rows if not calls[i].accepted]
        calls_end = sum(c.length for c in acc)
        m = matched.get(sid)
        buffer = reassembly.buffer if reassembly is not None else None
        wire_out = m.out if m else None
        out_len = max(calls_end, wire_out.length if wire_out else 0)
        overlays = [(c.stream_offset, c.payload) for c in acc if c.payload]
        layouts[(sid, Direction.OUT)] = StreamLayout.of(
            sid, Direction.OUT, out_len, wire_out, buffer, overlays
        )
        if ref:
            layouts[(sid, Direction.UNSENT)] = StreamLayout.of(
                sid,
                Direction.UNSENT,
                sum(c.length for c in ref),
                None,
                None,
                [(c.stream_offset, c.payload) for c in ref if c.payload],
            )
        if m is None:
            continue
        assert reassembly is not None
        seg = reassembly.segments
        if m.inbound.length:
            layouts[(sid, Direction.IN)] = StreamLayout.of(
                sid, Direction.IN, m.inbound.length, m.inbound, buffer
            )
        p = m.out.pieces
        cov_s, cov_e = merge_intervals(p.start, p.start + p.length)
        lo = np.array([c.stream_offset for c in acc], dtype=np.int64)
        hi = lo + np.array([c.length for c in acc], dtype=np.int64)
        seen = covered_bytes(cov_s, cov_e, lo, hi)
        not_on_wire += int(((seen == 0) & (hi > lo)).sum())
        partly += int(((seen > 0) & (seen < hi - lo)).sum())
        unexplained += int(
            covered_bytes(cov_s, cov_e, np.array([calls_end]), np.array([max(out_len, calls_end)]))[
                0
            ]
        )
        delta = shift - zero_utc_ns
        segment_tables.append(
            connection_segments(m.conn, seg, sid, local_is_client=m.local_is_client, shift_ns=delta)
        )
        trace.events += wire_events(
            m.conn, seg, sid, local_is_client=m.local_is_client, shift_ns=delta
        )
    if reassembly is not None:
        counts["calls_not_on_wire"] = not_on_wire
        counts["calls_partly_on_wire"] = partly
        counts["wire_bytes_without_call"] = unexplained
    trace.segments = SegmentTable.concat(segment_tables)
    if len(trace.segments):
        order = np.argsort(trace.segments.column("time_ns"), kind="stable")
        trace.segments = trace.segments.take(order)
    trace.events.sort(key=lambda e: e.time_ns)
    announced = {str(m.socket): m.out.sender_mss(m.inbound) for m in matches}
    trace.metadata["capture"] = {
        "sender_mss": {sid: mss for sid, mss in announced.items() if mss is not None}
    }
    return trace, layouts, report


def _shift_socket(sock: Any, zero: int) -> Any:
    from dataclasses import replace

    return replace(
        sock,
        open_ns=sock.open_ns - zero,
        close_ns=None if sock.close_ns is None else sock.close_ns - zero,
    )


def _call_table(calls: list[RecordedCall], zero: int) -> CallTable:
    n = len(calls)

    def col(values: list[int], dtype: str = "int64") -> np.ndarray:
        return np.array(values, dtype=dtype) if n else np.empty(0, dtype)

    done = [c.completion_ns is not None for c in calls]
    return CallTable(
        {
            "seq": np.arange(n),
            "socket": col([c.socket for c in calls]),
            "issue_ns": col([c.issue_ns - zero for c in calls]),
            "return_ns": col([c.return_ns - zero for c in calls]),
            "flags": col([c.flags for c in calls]),
            "offset": col([c.offset for c in calls]),
            "length": col([c.length for c in calls]),
            "status": col([c.status for c in calls]),
            "completed": col([int(d) for d in done]),
            "completion_ns": col(
                [c.completion_ns - zero if c.completion_ns is not None else 0 for c in calls]
            ),
            "completion_status": col([c.completion_status or 0 for c in calls]),
            "information": col([c.information or 0 for c in calls]),
            "irp": col([c.irp for c in calls], "uint64"),
            "irql": col([c.irql for c in calls]),
            "stream_offset": col([c.stream_offset for c in calls]),
            "control_len": col(
                [-1 if c.control_info is None else len(c.control_info) for c in calls]
            ),
        },
        b"".join(c.control_info or b"" for c in calls),
    )
