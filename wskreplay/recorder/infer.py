"""Send calls inferred from a capture alone (``import --infer-calls``).

For the chosen side of each connection (``client``: the side that sent the SYN, or
received the SYN-ACK; with neither captured the trace lists the socket under
``capture.opener_unknown`` and ``client`` is the first packet's sender; ``server``: the
other), its outbound stream is cut into calls. Only segments that carry new data (bytes past the
furthest byte sent so far) can start a call; a call starts at such a segment when:

1. it is the first one (the first call starts at stream offset 0), or
2. the previous new-data segment had PSH set (stacks set PSH on a send's last segment), or
3. more than ``idle_gap_ns`` passed since the previous new-data segment (a pause in
   sending), or
4. the other side sent new data in between (a turn of a request/response exchange).

Calls therefore cover every byte of the stream exactly once, gaps included (a gap's bytes
belong to the call around them and stay unknown). The other side becomes the recorded
peer. Every inferred call returns STATUS_PENDING at its first segment's time and completes
with STATUS_SUCCESS (Information = Length) when the peer first acknowledges its last byte
(completion policy ``on-ack``); a RST's ACK field is no acknowledgement (the reset policy,
:mod:`wskreplay.policies`). A call the peer never acknowledged completes with
STATUS_CONNECTION_RESET at the peer's RST if there was one the local stack would act on
(RSTs it would ignore are recorded as such); otherwise its completion is unknown (the
capture ended first, or never saw the peer's acknowledgements), never "did not complete".
The local side's FIN and RST become the socket's disconnect events (graceful, abortive),
replayed at their times. Flags are 0 and IRPs are numbered: a capture shows neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wskreplay.formats import ntstatus, pcap, wsk
from wskreplay.formats.tcpip import TCP_PSH, DecodeReport, TcpPackets, address
from wskreplay.policies import ResetPolicy
from wskreplay.recorder import tcp
from wskreplay.recorder.build import StreamLayout, connection_segments, wire_events
from wskreplay.recorder.correlate import NEVER, WireView
from wskreplay.trace.model import (
    COMPLETED,
    COMPLETION_UNKNOWN,
    CallTable,
    Clock,
    Direction,
    Event,
    SegmentTable,
    Socket,
    Trace,
)

DEFAULT_IDLE_GAP_NS = 1_000_000
IRP_BASE = 0xFFFF_A000_0000_0000
IRP_STEP = 0x100


@dataclass(frozen=True)
class InferOptions:
    side: str = "client"
    idle_gap_ns: int = DEFAULT_IDLE_GAP_NS
    capture: tcp.CaptureOptions = field(default_factory=tcp.CaptureOptions)
    reset: ResetPolicy = field(default_factory=ResetPolicy)


def call_boundaries(
    seg: TcpPackets, sent: tcp.Direction, other: tcp.Direction, idle_gap_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stream offsets where calls start and the time of the segment that starts each."""
    if not sent.length:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lens = seg.payload_len[sent.rows]
    ends = sent.rel_seq + lens
    reach = np.maximum.accumulate(np.where(lens > 0, ends, 0))
    before = np.concatenate(([0], reach[:-1]))
    new = (lens > 0) & (ends > before)
    idx = np.flatnonzero(new)
    times = seg.time_ns[sent.rows][idx]
    starts = np.maximum(sent.rel_seq[idx], before[idx])
    psh = (seg.flags[sent.rows][idx] & TCP_PSH) != 0
    cut = np.zeros(len(idx), dtype=bool)
    if len(idx):
        cut[0] = True
        cut[1:] |= psh[:-1]
        cut[1:] |= np.diff(times) > idle_gap_ns
        olens = seg.payload_len[other.rows]
        if len(olens):
            oends = other.rel_seq + olens
            oreach = np.maximum.accumulate(np.where(olens > 0, oends, 0))
            obefore = np.concatenate(([0], oreach[:-1]))
            onew_times = seg.time_ns[other.rows][(olens > 0) & (oends > obefore)]
            turns = np.searchsorted(onew_times, times, side="left")
            cut[1:] |= turns[1:] > turns[:-1]
    starts, times = starts[cut], times[cut]
    starts[0] = 0
    keep = np.concatenate(([True], starts[1:] > starts[:-1]))
    return starts[keep], times[keep]


def infer_trace(
    frames: pcap.Frames, options: InferOptions
) -> tuple[Trace, dict[tuple[int, Direction], StreamLayout], DecodeReport]:
    """A trace whose calls are inferred from ``frames`` (see the module docstring), with
    its streams as layouts, and what the decoder made of every frame."""
    reassembly = tcp.reassemble(frames, options.capture)
    seg = reassembly.segments
    zero = int(frames.time_ns.min()) if len(frames) else 0
    trace = Trace(clock=Clock(zero, "pcap"))
    tables: list[CallTable] = []
    segment_tables: list[SegmentTable] = []
    layouts: dict[tuple[int, Direction], StreamLayout] = {}
    seq0 = 0
    announced: dict[str, int] = {}
    peer_window: dict[str, dict] = {}
    unknown_opener: list[int] = []
    for sid, conn in enumerate(reassembly.connections):
        local_is_client = options.side == "client"
        sent = conn.to_server if local_is_client else conn.to_client
        other = conn.to_client if local_is_client else conn.to_server
        local, remote = (
            (conn.client, conn.server) if local_is_client else (conn.server, conn.client)
        )
        local_text, remote_text = address(*local[:2]), address(*remote[:2])
        to_server, to_client = conn.accepted_resets(seg, options.reset)
        rst_from_peer = np.flatnonzero(to_client if local_is_client else to_server)
        if (mss := sent.sender_mss(other)) is not None:
            announced[str(sid)] = mss
        peer_window[str(sid)] = {"known": other.window_known, "scale": other.wscale}
        if not conn.opener_known:
            unknown_opener.append(sid)
        trace.sockets[sid] = Socket(
            id=sid,
            category="connection",
            family=wsk.AF_INET6 if ":" in local_text else wsk.AF_INET,
            local_addr=local_text,
            local_port=local[2],
            remote_addr=remote_text,
            remote_port=remote[2],
            origin="connect" if local_is_client else "accept",
            open_ns=conn.first_ns - zero,
            close_ns=conn.last_ns - zero if (conn.fin or conn.rst) else None,
        )
        starts, times = call_boundaries(seg, sent, other, options.idle_gap_ns)
        lengths = np.diff(np.concatenate((starts, [sent.length])))
        view = WireView.of(seg, sent, other, options.reset)
        acked = view.acked(starts + lengths)
        n = len(starts)
        completion = np.where(acked != NEVER, np.maximum(acked, times), 0)
        completed = acked != NEVER
        status = np.full(n, ntstatus.STATUS_SUCCESS)
        information = lengths.copy()
        if len(rst_from_peer):
            t_rst = int(seg.time_ns[other.rows[rst_from_peer[0]]])
            reset = ~completed & (times <= t_rst)
            completion[reset] = t_rst
            completed |= reset
            status[reset] = ntstatus.STATUS_CONNECTION_RESET
            information[reset] = 0
        state = np.where(completed, COMPLETED, COMPLETION_UNKNOWN)
        seq = np.arange(seq0, seq0 + n)
        seq0 += n
        tables.append(
            CallTable(
                {
                    "seq": seq,
                    "socket": np.full(n, sid),
                    "issue_ns": times - zero,
                    "return_ns": times - zero,
                    "flags": np.zeros(n, np.int64),
                    "offset": np.zeros(n, np.int64),
                    "length": lengths,
                    "status": np.full(n, ntstatus.STATUS_PENDING),
                    "completed": state.astype(np.int64),
                    "completion_ns": np.where(completed, completion - zero, 0),
                    "completion_status": np.where(completed, status, 0),
                    "information": np.where(completed, information, 0),
                    "irp": np.uint64(IRP_BASE) + np.uint64(IRP_STEP) * seq.astype(np.uint64),
                    "irql": np.full(n, -1),
                    "stream_offset": starts,
                    "control_len": np.full(n, -1),
                }
            )
        )
        buffer = reassembly.buffer
        layouts[(sid, Direction.OUT)] = StreamLayout.of(
            sid, Direction.OUT, sent.length, sent, buffer
        )
        if other.length:
            layouts[(sid, Direction.IN)] = StreamLayout.of(
                sid, Direction.IN, other.length, other, buffer
            )
        segment_tables.append(
            connection_segments(conn, seg, sid, local_is_client=local_is_client, shift_ns=-zero)
        )
        wire = wire_events(
            conn, seg, sid, local_is_client=local_is_client, shift_ns=-zero, policy=options.reset
        )
        trace.events += wire + local_disconnects(wire)
    calls = CallTable.concat(tables)
    order = np.argsort(calls.column("issue_ns"), kind="stable")
    cols = calls.take(order).columns
    cols["seq"] = np.arange(len(calls))
    trace.calls = CallTable(cols)
    trace.segments = SegmentTable.concat(segment_tables)
    if len(trace.segments):
        trace.segments = trace.segments.take(
            np.argsort(trace.segments.column("time_ns"), kind="stable")
        )
    trace.events.sort(key=lambda e: e.time_ns)
    trace.metadata["completion_policy"] = {
        "policy": "on-ack",
        "evidence": "inferred calls: completion is placed at the peer's ACK by construction",
    }
    trace.metadata["capture"] = {
        "sender_mss": announced,
        "peer_window": peer_window,
        "opener_unknown": unknown_opener,
    }
    trace.metadata["policies"] = {"reset": options.reset.as_dict()}
    return trace, layouts, reassembly.report


def local_disconnects(wire: list[Event]) -> list[Event]:
    """The local side's first FIN or RST on the wire, as the driver's WskDisconnect
    (graceful, or WSK_FLAG_ABORTIVE) at that time: an inferred trace replays it."""
    mine = [e for e in wire if e.attrs.get("by") == "local" and e.kind in ("fin", "reset")]
    if not mine:
        return []
    first = min(mine, key=lambda e: e.time_ns)
    flags = wsk.WSK_FLAG_ABORTIVE if first.kind == "reset" else 0
    attrs = {"flags": flags, "status": ntstatus.STATUS_SUCCESS, "source": "wire"}
    return [Event(first.time_ns, "disconnect", first.socket, attrs)]
