"""One emulated connection in virtual time: the WSK layer, the TCP sender and the peer.

Still sans-IO: no clock of its own. :meth:`EmulatedConnection.call` issues a WskSendEx at
the call's time (first running everything due before it); :meth:`run_until` lets time
pass. Both return what happened, in time order: what calls returned, IRP completions,
contract violations, and the segments on the wire in both directions. The same inputs give
the same outputs, always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from librt.vecs import append, vec
from librt.vecs import pop as vec_pop
from mypy_extensions import i64

from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST
from wskreplay.replayer.chaos import Chaos
from wskreplay.replayer.peer import ParametricPeer, PathParams, PeerAck
from wskreplay.replayer.profile import TransportProfile
from wskreplay.replayer.tcp_sender import (
    NEVER,
    Acknowledged,
    SentSegment,
    TcpSender,
    Transmitted,
)
from wskreplay.replayer.wsk_socket import (
    Completed,
    Returned,
    SendRequest,
    SocketState,
    Transmit,
    Violation,
    WskEvent,
    WskSocket,
)
from wskreplay.trace.model import Direction


@dataclass(slots=True, init=False)
class WireSegment:
    """A segment as a capture at the sender would show it."""

    time_ns: int
    outbound: bool
    seq: int
    length: int
    flags: int
    ack: int = 0
    window: int = 0
    retransmission: bool = False

    def __init__(
        self,
        time_ns: int,
        outbound: bool,
        seq: int,
        length: int,
        flags: int,
        ack: int = 0,
        window: int = 0,
        retransmission: bool = False,
    ) -> None:
        self.time_ns = time_ns
        self.outbound = outbound
        self.seq = seq
        self.length = length
        self.flags = flags
        self.ack = ack
        self.window = window
        self.retransmission = retransmission


Output = Returned | Completed | Violation | WireSegment


WIRE_COLUMNS: Final = ("time_ns", "direction", "length", "seq", "flags", "ack", "window")


class WireColumns:
    """A connection's wire segments, kept as the columns of a trace's segment table (no
    segment object is made for them), in vectors of native int64s: compiled, appending
    to them boxes no int (docs/performance.md, "Replay: native int64 vectors for what
    a call reads and writes")."""

    def __init__(self) -> None:
        self.time_ns: vec[i64] = vec[i64]()
        self.direction: vec[i64] = vec[i64]()
        self.length: vec[i64] = vec[i64]()
        self.seq: vec[i64] = vec[i64]()
        self.flags: vec[i64] = vec[i64]()
        self.ack: vec[i64] = vec[i64]()
        self.window: vec[i64] = vec[i64]()
        self.made: dict[str, np.ndarray] | None = None

    @staticmethod
    def of(arrays: dict[str, np.ndarray]) -> WireColumns:
        """The columns another process's replay made (:meth:`arrays`), added to no more."""
        out = WireColumns()
        out.made = arrays
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        if self.made is not None:
            return self.made
        columns = (
            self.time_ns,
            self.direction,
            self.length,
            self.seq,
            self.flags,
            self.ack,
            self.window,
        )
        return {
            name: int64_view(values) for name, values in zip(WIRE_COLUMNS, columns, strict=True)
        }

    def add(
        self,
        time_ns: int,
        outbound: bool,
        seq: int,
        length: int,
        flags: int,
        ack: int,
        window: int,
    ) -> None:
        self.time_ns = append(self.time_ns, time_ns)
        self.direction = append(self.direction, OUTBOUND if outbound else INBOUND)
        self.length = append(self.length, length)
        self.seq = append(self.seq, seq if outbound else 0)
        self.flags = append(self.flags, flags)
        self.ack = append(self.ack, 0 if outbound else ack)
        self.window = append(self.window, window)


def int64_view(values: vec[i64]) -> np.ndarray:
    """``values`` as a read-only numpy array over the vector's own buffer (no copy; the
    array keeps the vector alive)."""
    return np.frombuffer(memoryview(values), np.int64)


OUTBOUND: Final = int(Direction.OUT)
INBOUND: Final = int(Direction.IN)


ARRIVE: Final = 0
ACK: Final = 1
WRITE: Final = 2
PEER_RESET: Final = 3
NOTIFY: Final = 4
"""Kinds of scheduled happenings: a segment reaching the peer, a segment from the peer
reaching this side, a call's bytes reaching TCP, a peer reset at a fixed time, a completion
reaching the driver (delayed by chaos)."""


class DueQueue:
    """A connection's scheduled happenings, each a time, a kind and what it is about,
    taken earliest first, in the order they were scheduled when their times tie. A binary
    heap kept in native int64 vectors: pushing and popping makes no tuple and compares no
    Python object, which heapq over (time, order, kind, item) tuples did on every segment
    (docs/performance.md, "Replay: native int64 vectors for what a call reads and
    writes"; tests/test_emulator.py holds it to heapq's order)."""

    def __init__(self) -> None:
        self.times: vec[i64] = vec[i64]()
        self.orders: vec[i64] = vec[i64]()
        self.kinds: vec[i64] = vec[i64]()
        self.items: list[object] = []
        self.scheduled = 0
        """Happenings scheduled so far: the next one's order."""
        self.first = NEVER
        """When the earliest is due (:data:`NEVER`: none is)."""

    def __len__(self) -> int:
        return len(self.items)

    def first_time(self) -> int:
        """When the earliest is due, or :data:`NEVER` when none is."""
        return self.first

    def push(self, time_ns: int, kind: int, item: object) -> None:
        self.scheduled += 1
        order: i64 = self.scheduled
        self.times = append(self.times, time_ns)
        self.orders = append(self.orders, order)
        self.kinds = append(self.kinds, kind)
        self.items.append(item)
        times, orders, kinds, items = self.times, self.orders, self.kinds, self.items
        k: i64 = len(items) - 1
        while k > 0:
            parent = (k - 1) >> 1
            if times[parent] < time_ns or (times[parent] == time_ns and orders[parent] < order):
                break
            self._move(parent, k)
            k = parent
        times[k], orders[k], kinds[k], items[k] = time_ns, order, kind, item
        if k == 0:
            self.first = time_ns

    def _move(self, source: i64, to: i64) -> None:
        """Entry ``source`` into place ``to`` (the vectors share their buffers with the
        callers' locals: only their items change here)."""
        self.times[to] = self.times[source]
        self.orders[to] = self.orders[source]
        self.kinds[to] = self.kinds[source]
        self.items[to] = self.items[source]

    def pop(self) -> tuple[int, int, object]:
        """The earliest happening's time, kind and item, taken off the queue."""
        times, orders, kinds, items = self.times, self.orders, self.kinds, self.items
        first = (times[0], kinds[0], items[0])
        last: i64 = len(items) - 1
        self.times, time_ns = vec_pop(times)
        self.orders, order = vec_pop(orders)
        self.kinds, kind = vec_pop(kinds)
        item = items.pop()
        if last > 0:
            times, orders, kinds = self.times, self.orders, self.kinds
            k: i64 = 0
            while True:
                child = 2 * k + 1
                if child >= last:
                    break
                right = child + 1
                if right < last and (
                    times[right] < times[child]
                    or (times[right] == times[child] and orders[right] < orders[child])
                ):
                    child = right
                if time_ns < times[child] or (time_ns == times[child] and order < orders[child]):
                    break
                self._move(child, k)
                k = child
            times[k], orders[k], kinds[k], items[k] = time_ns, order, kind, item
            self.first = times[0]
        else:
            self.first = NEVER
        return first


class EmulatedConnection:
    def __init__(
        self,
        profile: TransportProfile,
        path: PathParams,
        *,
        category: str = "connection",
        mss: int | None = None,
        peer_reset_ns: int | None = None,
        peer: ParametricPeer | None = None,
        chaos: Chaos | None = None,
        wire: WireColumns | None = None,
    ) -> None:
        """``wire``: the wire segments go there as they happen, not to the outputs."""
        self.profile = profile
        self.chaos = chaos
        self.wire = wire
        self._stack_free = 0
        """When the host's stack hands TCP the bytes of the latest call (in call order)."""
        self.wsk = WskSocket(profile, category)
        self.tcp = TcpSender(profile.tcp, mss=mss, peer_window=path.receive_window)
        self.peer = peer if peer is not None else ParametricPeer(path)
        self.received = 0
        """Bytes of the peer's own stream received here (this side acknowledges them)."""
        self.reset_ns: int | None = None
        """When the peer's RST arrived, if it did."""
        self.now = 0
        self._due = DueQueue()
        if peer_reset_ns is not None:
            self._schedule(peer_reset_ns, PEER_RESET, None)

    def _schedule(self, time_ns: int, kind: int, item: object) -> None:
        self._due.push(time_ns, kind, item)

    def reset_time(self) -> int | None:
        """When the peer's RST arrived, or None (a method, not the attribute: callers wait
        for it to change while they let time pass)."""
        return self.reset_ns

    def next_time(self) -> int:
        """When the next thing is due (a packet, an ACK, a timer), or :data:`NEVER`."""
        best = self._due.first_time()
        tcp_t, peer_t = self.tcp.timer(), self.peer.timer()
        if tcp_t < best:
            best = tcp_t
        if peer_t < best:
            best = peer_t
        return best

    def call(
        self,
        req: SendRequest,
        stack_delay_ns: int = 0,
        pieces: list[tuple[int, int]] | None = None,
    ) -> list[Output]:
        """A WskSendEx at ``req.time_ns``; its bytes reach TCP ``stack_delay_ns`` later (the
        host's own latency, taken from the recording), never before an earlier call's;
        with ``pieces`` ((length, delay after the first), summing to the call's length),
        each piece that much later than the first."""
        out = self.run_until(req.time_ns)
        self.now = max(self.now, req.time_ns)
        events = self.wsk.send(req)
        transmitted = any(isinstance(e, Transmit) for e in events)
        if pieces is not None:
            events = self._release(events, stack_delay_ns, pieces)
        self._wsk_outputs(events, out, stack_delay_ns)
        if transmitted and req.irp is not None:
            out.append(self.wsk.returned(req.irp, self.now))
        return out

    def run_until(self, time_ns: int) -> list[Output]:
        """Everything due at or before ``time_ns``."""
        out: list[Output] = []
        due = self._due
        tcp, peer = self.tcp, self.peer
        while True:
            t: int = due.first_time()
            tcp_t, peer_t = tcp.timer(), peer.timer()
            if tcp_t < t:
                t = tcp_t
            if peer_t < t:
                t = peer_t
            if t > time_ns or t == NEVER:
                break
            if t > self.now:
                self.now = t
            if due.first_time() == t:
                due_ns, kind, item = due.pop()
                self._handle(due_ns, kind, item, out)
                continue
            if tcp_t == t:
                self._tcp_outputs(tcp.on_timer(t), out)
            if peer_t == t:
                for ack in peer.on_timer(t):
                    self._schedule(self._from_peer_at(t, ack.time_ns), ACK, ack)
        self.now = max(self.now, time_ns)
        return out

    def state(self) -> dict:
        """What a developer stepping through a replay wants to see of this connection."""
        tcp, wsk_ = self.tcp, self.wsk
        return {
            "wsk": {
                "state": wsk_.state.value,
                "outstanding_irps": [p.irp for p in wsk_.pending if not p.done],
                "queued_end": wsk_.queued_end,
                "in_host_stack": wsk_.queued_end - tcp.queued,
            },
            "tcp": {
                "queued_unsent": tcp.queued - tcp.nxt,
                "in_flight": tcp.nxt - tcp.una,
                "acknowledged": tcp.una,
                "peer_window": tcp.rwnd,
                "cwnd": tcp.cwnd,
                "ssthresh": None if tcp.ssthresh >= 1 << 62 else tcp.ssthresh,
                "rto_ns": tcp.rto,
                "srtt_ns": tcp.srtt,
                "in_recovery": tcp.recover is not None,
                "fin_sent": tcp.fin_sent,
            },
            "peer": {"received": self.peer.rcv_nxt, "dropped": self.peer.dropped},
        }

    def settle(self, horizon_ns: int) -> list[Output]:
        """Run until nothing is left to happen, or ``horizon_ns`` past now."""
        return self.run_until(self.now + horizon_ns)

    def close(self, time_ns: int) -> list[Output]:
        """WskCloseSocket: pending sends are cancelled; an abortive disconnect (a RST)
        "unless already fully disconnected" (wsk-facts), here: unless a graceful disconnect
        was asked for or the connection is already reset."""
        out = self.run_until(time_ns)
        was = self.wsk.state
        self._wsk_outputs(self.wsk.close(time_ns), out)
        if was is SocketState.CONNECTED:
            self._tcp_outputs(self.tcp.reset(time_ns), out)
        return out

    def disconnect(self, time_ns: int, *, abortive: bool) -> list[Output]:
        out = self.run_until(time_ns)
        self._wsk_outputs(self.wsk.disconnect(time_ns, abortive=abortive), out)
        tcp = self.tcp.reset(time_ns) if abortive else self.tcp.close(time_ns)
        self._tcp_outputs(tcp, out)
        return out

    # What follows appends what happened to ``out``, in order, instead of returning lists
    # to be joined: one list per step of the replay, not one per layer and event.

    def _handle(self, time_ns: int, kind: int, item: object, out: list[Output]) -> None:
        if kind == ARRIVE:
            assert isinstance(item, SentSegment)
            for reply in self.peer.receive(item, time_ns):
                self._schedule(self._from_peer_at(time_ns, reply.time_ns), ACK, reply)
        elif kind == NOTIFY:
            assert isinstance(item, Completed)
            out.append(Completed(item.irp, item.status, item.information, time_ns))
        elif kind == ACK:
            assert isinstance(item, PeerAck)
            self._from_peer(item, time_ns, out)
        elif kind == WRITE:
            assert isinstance(item, Transmit)
            self._tcp_outputs(
                self.tcp.write(item.length, nodelay=item.nodelay, time_ns=time_ns), out
            )
        else:
            assert kind == PEER_RESET
            self._segment(out, time_ns, False, self.peer.rcv_nxt, 0, TCP_RST | TCP_ACK, 0, 0)
            self.tcp.aborted()
            self.reset_ns = time_ns
            self._wsk_outputs(self.wsk.peer_reset(time_ns), out)

    def _from_peer_at(self, base_ns: int, arrival_ns: int) -> int:
        chaos = self.chaos
        return arrival_ns if chaos is None else chaos.from_peer(base_ns, arrival_ns)

    def _from_peer(self, ack: PeerAck, time_ns: int, out: list[Output]) -> None:
        """A segment from the peer: its ACK and window for the sender, its data (this side
        acknowledges it at once), its FIN, or its RST."""
        flags = TCP_ACK | (ack.flags & (TCP_PSH | TCP_FIN | TCP_RST))
        self._segment(out, time_ns, False, ack.seq, ack.length, flags, ack.ack, ack.window)
        if ack.flags & TCP_RST:
            if self.profile.reset.ack_acknowledges:
                self._tcp_outputs(self.tcp.on_ack(ack.ack, ack.window, time_ns), out)
            self.tcp.aborted()
            self.reset_ns = time_ns
            self._wsk_outputs(self.wsk.peer_reset(time_ns), out)
            return
        if ack.length or ack.flags & TCP_FIN:
            self.received = max(self.received, ack.seq + ack.length)
            fin = 1 if ack.flags & TCP_FIN else 0
            self._segment(out, time_ns, True, self.tcp.nxt, 0, TCP_ACK, self.received + fin, 64240)
        data = bool(ack.length or ack.flags & TCP_FIN)
        self._tcp_outputs(self.tcp.on_ack(ack.ack, ack.window, time_ns, carries_data=data), out)

    def _wsk_outputs(
        self,
        events: list[WskEvent],
        out: list[Output],
        stack_delay_ns: int = 0,
        *,
        sent: bool = False,
    ) -> None:
        """``sent``: the events follow bytes sent or acknowledged (their completions are
        the ones chaos may delay)."""
        chaos = self.chaos
        for e in events:
            if chaos is not None and isinstance(e, Transmit):
                self._write_in_pieces(e, stack_delay_ns, chaos)
            elif chaos is not None and sent and isinstance(e, Completed):
                self._schedule(e.time_ns + chaos.completion_delay(), NOTIFY, e)
            elif isinstance(e, Transmit) and (stack_delay_ns or self._stack_free > e.time_ns):
                self._stack_free = max(self._stack_free, e.time_ns + stack_delay_ns)
                self._schedule(self._stack_free, WRITE, e)
            elif isinstance(e, Transmit):
                self._tcp_outputs(
                    self.tcp.write(e.length, nodelay=e.nodelay, time_ns=e.time_ns), out
                )
            else:
                out.append(e)

    def _tcp_outputs(self, events: list, out: list[Output]) -> None:
        for e in events:
            if isinstance(e, SentSegment):
                departure, arrival = self.peer.transmit(e)
                self._segment(
                    out,
                    departure,
                    True,
                    e.seq,
                    e.length,
                    e.flags,
                    self.peer.rcv_nxt,
                    64240,
                    e.retransmission,
                )
                if arrival != NEVER:
                    self._schedule(arrival, ARRIVE, e)
            elif isinstance(e, Transmitted):
                self._wsk_outputs(self.wsk.transmitted(e.end, e.time_ns), out, sent=True)
            elif isinstance(e, Acknowledged):
                self._wsk_outputs(self.wsk.acknowledged(e.end, e.time_ns), out, sent=True)

    def _segment(
        self,
        out: list[Output],
        time_ns: int,
        outbound: bool,
        seq: int,
        length: int,
        flags: int,
        ack: int,
        window: int,
        retransmission: bool = False,
    ) -> None:
        wire = self.wire
        if wire is None:
            out.append(
                WireSegment(time_ns, outbound, seq, length, flags, ack, window, retransmission)
            )
        else:
            wire.add(time_ns, outbound, seq, length, flags, ack, window)

    def _release(
        self, events: list[WskEvent], stack_delay_ns: int, pieces: list[tuple[int, int]]
    ) -> list[WskEvent]:
        """``events`` with the call's Transmit handed to TCP piece by piece."""
        rest: list[WskEvent] = []
        for e in events:
            if not isinstance(e, Transmit) or sum(p[0] for p in pieces) != e.length:
                rest.append(e)
                continue
            first = max(self._stack_free, e.time_ns + stack_delay_ns)
            for length, delay in pieces:
                self._stack_free = max(self._stack_free, first + delay)
                self._schedule(self._stack_free, WRITE, Transmit(e.irp, length, e.nodelay, first))
        return rest

    def _write_in_pieces(self, e: Transmit, stack_delay_ns: int, chaos: Chaos) -> None:
        """A call's bytes to TCP after the stack delay, in call order, maybe in two writes."""
        at = max(self._stack_free, e.time_ns + stack_delay_ns)
        cut = chaos.split(e.length)
        if cut is None:
            self._schedule(at, WRITE, e)
            self._stack_free = at
            return
        first, gap = cut
        self._schedule(at, WRITE, Transmit(e.irp, first, e.nodelay, at))
        self._stack_free = at + gap
        self._schedule(self._stack_free, WRITE, Transmit(e.irp, e.length - first, e.nodelay, at))
