"""Synthetic but realistic traces, deterministic for a seed (tests, benchmarks, demos).

Each socket carries a handshake, the driver's sends cut into MSS segments at line rate,
the peer's delayed ACKs one RTT later (calls complete when their last byte is acknowledged:
the ``on-ack`` policy), small responses from the peer after NODELAY sends, and a FIN
exchange. The last socket of a multi-socket trace is reset by its peer part way through:
its pending sends complete with STATUS_CONNECTION_RESET and later sends return
STATUS_FILE_FORCED_CLOSED. Payload bytes are random (incompressible).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from wskreplay.formats import ntstatus as nt
from wskreplay.formats import wsk
from wskreplay.trace.model import CallTable, Clock, Direction, Event, SegmentTable, Socket, Trace

MSS = 1460
NS_PER_BYTE = 8
"""1 Gbit/s line rate."""
WIRE_OVERHEAD = 54
TICK_NS = 100
"""Every synthetic time is a whole 10 MHz QPC tick, as in a real ETW recording."""
ZERO_UTC_NS = 1_767_225_600_000_000_000
"""2026-01-01T00:00:00Z, the synthetic clock's zero."""

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
CONTROL_INFO = wsk.encode_cmsgs([wsk.ControlMessage(wsk.IPPROTO_IP, 3, b"\x10\0\0\0")])
"""One CMSGHDR (x64): IPPROTO_IP / IP_TOS = 0x10."""


def send_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """15% tiny sends (1-64 B), the rest Pareto (alpha 1.15 from 64 B), capped at 1 MiB."""
    tiny = rng.integers(1, 65, n)
    pareto = np.floor(64.0 / rng.random(n) ** (1 / 1.15))
    sizes = np.where(rng.random(n) < 0.15, tiny, np.minimum(pareto, 1 << 20))
    return sizes.astype(np.int64)


def random_bytes(rng: np.random.Generator, n: int) -> bytearray:
    words = rng.integers(0, np.iinfo(np.int64).max, (n + 7) // 8, dtype=np.int64)
    return bytearray(words.view(np.uint8)[:n].tobytes())


def _ticks(times: np.ndarray) -> np.ndarray:
    return times // TICK_NS * TICK_NS


class _Segments:
    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(
        self,
        socket: int,
        direction: Direction,
        time: np.ndarray,
        seq: np.ndarray,
        length: np.ndarray,
        flags: np.ndarray | int,
        ack: np.ndarray | int,
        window: np.ndarray | int,
    ) -> None:
        n = len(time)
        self.parts.append(
            {
                "time_ns": time,
                "socket": np.full(n, socket),
                "direction": np.full(n, int(direction)),
                "seq": seq,
                "length": length,
                "flags": np.broadcast_to(flags, n),
                "ack": np.broadcast_to(ack, n),
                "window": np.broadcast_to(window, n),
            }
        )

    def table(self) -> SegmentTable:
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        order = np.argsort(cols["time_ns"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
        cols["time_ns"] = _ticks(cols["time_ns"])
        return SegmentTable(cols)


def synth_trace(calls: int = 1000, sockets: int = 4, seed: int = 0) -> Trace:
    if calls < 1 or sockets < 1:
        raise ValueError("synth needs at least one call and one socket")
    rng = np.random.default_rng(seed)
    n = calls
    issue = np.cumsum(rng.exponential(20_000, n)).astype(np.int64) + 20_000_000
    weights = rng.dirichlet(np.full(sockets, 2.0))
    sock = rng.choice(sockets, n, p=weights).astype(np.int64)
    sock[:sockets] = np.arange(min(sockets, n))
    length = send_sizes(rng, n)
    flags = np.where(rng.random(n) < 0.3, wsk.WSK_FLAG_NODELAY, 0)
    offset = np.where(rng.random(n) < 0.1, 16, 0)
    has_control = rng.random(n) < 0.02
    irp = 0xFFFFC00012340000 + 0x200 * rng.integers(0, 64, n).astype(np.uint64)
    irql = np.where(rng.random(n) < 0.2, 2, 0)
    ret = issue + rng.lognormal(np.log(2500), 0.4, n).astype(np.int64)
    status = np.full(n, nt.STATUS_PENDING)
    completed = np.ones(n, dtype=np.int64)
    completion = np.zeros(n, dtype=np.int64)
    completion_status = np.full(n, nt.STATUS_SUCCESS)
    information = length.copy()
    stream_offset = np.zeros(n, dtype=np.int64)

    trace = Trace(clock=Clock(ZERO_UTC_NS, "synthetic", qpc_frequency=10_000_000))
    segs = _Segments()
    events: list[Event] = []
    reset_socket = sockets - 1 if sockets > 1 else None
    for s in range(sockets):
        idx = np.flatnonzero(sock == s)
        if not len(idx):
            continue
        rtt = int(np.clip(rng.lognormal(np.log(400_000), 0.8), 50_000, 5_000_000))
        open_ns = int(issue[idx[0]]) - 3 * rtt - 50_000
        accepted = np.ones(len(idx), dtype=bool)
        reset_at = None
        if s == reset_socket and len(idx) >= 4:
            reset_at = int(issue[idx[int(len(idx) * 0.6)]]) - 1
            accepted = issue[idx] < reset_at
        acc = idx[accepted]
        # The driver's stream: accepted sends back to back, cut into MSS segments.
        lens = length[acc]
        offs = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
        stream_offset[acc] = offs
        nseg = (lens + MSS - 1) // MSS
        dur = (lens + WIRE_OVERHEAD * nseg) * NS_PER_BYTE
        ready = issue[acc] + 4_000
        before = np.concatenate(([0], np.cumsum(dur)[:-1]))
        tx_start = before + np.maximum.accumulate(ready - before)
        call_of_seg = np.repeat(np.arange(len(acc)), nseg)
        k = np.arange(len(call_of_seg)) - np.repeat(np.cumsum(nseg) - nseg, nseg)
        seg_seq = offs[call_of_seg] + k * MSS
        seg_len = np.minimum(MSS, lens[call_of_seg] - k * MSS)
        seg_time = tx_start[call_of_seg] + (k * MSS + (k + 1) * WIRE_OVERHEAD) * NS_PER_BYTE
        last_of_call = k == nseg[call_of_seg] - 1
        seg_flags = np.where(last_of_call, TCP_ACK | TCP_PSH, TCP_ACK)
        # The peer: a delayed ACK for every second segment and every call's last one.
        acked = last_of_call | (np.arange(len(seg_seq)) % 2 == 1)
        ack_time = np.maximum.accumulate(
            seg_time[acked] + rtt + rng.exponential(20_000, int(acked.sum())).astype(np.int64)
        )
        ack_value = (seg_seq + seg_len)[acked]
        if reset_at is not None:
            keep = seg_time < reset_at
            seg_seq, seg_len, seg_time, seg_flags = (
                a[keep] for a in (seg_seq, seg_len, seg_time, seg_flags)
            )
            keep_ack = ack_time < reset_at
            ack_time, ack_value = ack_time[keep_ack], ack_value[keep_ack]
        # Completions: when the ACK covering the call's last byte arrives.
        ends = offs + lens
        hit = np.searchsorted(ack_value, ends, side="left")
        done = hit < len(ack_value)
        comp = np.full(len(acc), np.iinfo(np.int64).max)
        comp[done] = ack_time[hit[done]] + rng.integers(2_000, 8_000, int(done.sum()))
        zero = lens == 0
        comp[zero] = ret[acc][zero] - 500
        comp = np.maximum(comp, issue[acc] + 1_000)
        # Peer responses after NODELAY sends.
        nodelay_done = (flags[acc] == wsk.WSK_FLAG_NODELAY) & done & ~zero
        resp_time = comp[nodelay_done] + 30_000
        resp_len = rng.integers(32, 513, int(nodelay_done.sum()))
        if reset_at is not None:
            keep = resp_time < reset_at
            resp_time, resp_len = resp_time[keep], resp_len[keep]
        order = np.argsort(resp_time, kind="stable")
        resp_time, resp_len = resp_time[order], resp_len[order]
        resp_seq = np.concatenate(([0], np.cumsum(resp_len)[:-1])).astype(np.int64)
        in_total = int(resp_len.sum())
        # Immediate successes: small sends the transport completed before returning.
        immediate = (rng.random(len(acc)) < 0.08) & (lens <= 2048) & done
        if reset_at is not None:
            pending_at_reset = comp >= reset_at
            comp[pending_at_reset] = reset_at + 3_000 + np.arange(int(pending_at_reset.sum())) * 200
            completion_status[acc[pending_at_reset]] = nt.STATUS_CONNECTION_RESET
            information[acc[pending_at_reset]] = 0
            immediate &= ~pending_at_reset
        status[acc[immediate]] = nt.STATUS_SUCCESS
        comp[immediate] = ret[acc][immediate] - 300
        completion[acc] = comp
        # Segments on the wire, with acks and windows.
        in_arrived = np.searchsorted(resp_time + rtt // 2, seg_time, side="right")
        out_ack = np.concatenate(([0], np.cumsum(resp_len)))[in_arrived]
        segs.add(s, Direction.OUT, seg_time, seg_seq, seg_len, seg_flags, out_ack, 64240)
        ack_in_seq = np.concatenate(([0], np.cumsum(resp_len)))[
            np.searchsorted(resp_time, ack_time, side="right")
        ]
        segs.add(
            s,
            Direction.IN,
            ack_time,
            ack_in_seq,
            np.zeros(len(ack_time), np.int64),
            TCP_ACK,
            ack_value,
            262144,
        )
        resp_ack = (
            ack_value[np.maximum(np.searchsorted(ack_time, resp_time, side="right") - 1, 0)]
            if len(ack_value)
            else np.zeros(len(resp_time), np.int64)
        )
        segs.add(
            s, Direction.IN, resp_time, resp_seq, resp_len, TCP_ACK | TCP_PSH, resp_ack, 262144
        )
        segs.add(
            s,
            Direction.OUT,
            np.array([open_ns, open_ns + rtt + 5_000]),
            np.zeros(2, np.int64),
            np.zeros(2, np.int64),
            np.array([TCP_SYN, TCP_ACK]),
            0,
            64240,
        )
        segs.add(
            s,
            Direction.IN,
            np.array([open_ns + rtt]),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            TCP_SYN | TCP_ACK,
            0,
            262144,
        )
        out_total = int(lens.sum())
        if reset_at is not None:
            # Sends after the reset fail at once and complete with the same status.
            rej = idx[~accepted]
            status[rej] = nt.STATUS_FILE_FORCED_CLOSED
            completion_status[rej] = nt.STATUS_FILE_FORCED_CLOSED
            completion[rej] = issue[rej] + 800
            information[rej] = 0
            stream_offset[rej] = np.concatenate(([0], np.cumsum(length[rej])[:-1]))
            sent = int((seg_seq + seg_len).max()) if len(seg_seq) else 0
            segs.add(
                s,
                Direction.IN,
                np.array([reset_at]),
                np.array([in_total]),
                np.zeros(1, np.int64),
                TCP_RST | TCP_ACK,
                sent,
                0,
            )
            events.append(Event(reset_at, "reset", s, {"by": "peer"}))
            close_ns = int(max(issue[idx].max(), completion[idx].max())) + 50_000
            unsent = trace.stream(s, Direction.UNSENT)
            unsent.data = random_bytes(rng, int(length[rej].sum()))
            unsent.length = len(unsent.data)
        else:
            fin_ns = int(max(comp.max(), seg_time.max() if len(seg_time) else 0)) + 100_000
            segs.add(
                s,
                Direction.OUT,
                np.array([fin_ns]),
                np.array([out_total]),
                np.zeros(1, np.int64),
                TCP_FIN | TCP_ACK,
                in_total,
                64240,
            )
            segs.add(
                s,
                Direction.IN,
                np.array([fin_ns + rtt]),
                np.array([in_total]),
                np.zeros(1, np.int64),
                TCP_FIN | TCP_ACK,
                out_total,
                262144,
            )
            events.append(Event(fin_ns - 1_000, "disconnect", s, {"flags": 0}))
            close_ns = fin_ns + rtt + 10_000
        events.append(Event(close_ns, "close", s, {}))
        out = trace.stream(s, Direction.OUT)
        out.data = random_bytes(rng, out_total)
        out.length = out_total
        if in_total:
            inbound = trace.stream(s, Direction.IN)
            inbound.data = random_bytes(rng, in_total)
            inbound.length = in_total
        v6 = s == 1
        trace.sockets[s] = Socket(
            id=s,
            category="stream" if s == 2 else "connection",
            family=wsk.AF_INET6 if v6 else wsk.AF_INET,
            local_addr="2001:db8::1" if v6 else "192.0.2.10",
            local_port=49152 + s,
            remote_addr="2001:db8::2" if v6 else f"198.51.100.{20 + s}",
            remote_port=445,
            origin=("connect", "socket-connect", "accept")[s % 3],
            open_ns=open_ns,
            close_ns=close_ns,
            handle=0xFFFFB00000100000 + 0x1000 * s,
        )

    control_len = np.where(has_control, len(CONTROL_INFO), -1)
    trace.calls = CallTable(
        {
            "seq": np.arange(n),
            "socket": sock,
            "issue_ns": _ticks(issue),
            "return_ns": _ticks(ret),
            "flags": flags,
            "offset": offset,
            "length": length,
            "status": status,
            "completed": completed,
            "completion_ns": _ticks(completion),
            "completion_status": completion_status,
            "information": information,
            "irp": irp,
            "irql": irql,
            "stream_offset": stream_offset,
            "control_len": control_len,
        },
        CONTROL_INFO * int(has_control.sum()),
    )
    trace.segments = segs.table()
    trace.events = sorted(
        (Event(e.time_ns // TICK_NS * TICK_NS, e.kind, e.socket, e.attrs) for e in events),
        key=lambda e: e.time_ns,
    )
    trace.sockets = {
        k: replace(
            v,
            open_ns=v.open_ns // TICK_NS * TICK_NS,
            close_ns=None if v.close_ns is None else v.close_ns // TICK_NS * TICK_NS,
        )
        for k, v in trace.sockets.items()
    }
    trace.metadata = {
        "source": "synth",
        "synth": {"calls": calls, "sockets": sockets, "seed": seed},
        "driver": {"name": "synthetic.sys", "version": "0.0.0"},
        "host": "synthetic",
        "completion_policy": {"policy": "on-ack", "evidence": "synthetic: completions follow ACKs"},
        "capture": {"mss": MSS, "link_rate_bps": 8 * 10**9 // NS_PER_BYTE},
    }
    return trace
