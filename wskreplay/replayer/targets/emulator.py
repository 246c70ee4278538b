"""One emulated connection in virtual time: the WSK layer, the TCP sender and the peer.

Still sans-IO: no clock of its own. :meth:`EmulatedConnection.call` issues a WskSendEx at
the call's time (first running everything due before it); :meth:`run_until` lets time
pass. Both return what happened, in time order: what calls returned, IRP completions,
contract violations, and the segments on the wire in both directions. The same inputs give
the same outputs, always.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST
from wskreplay.replayer.peer import ParametricPeer, PathParams, PeerAck
from wskreplay.replayer.profile import TransportProfile
from wskreplay.replayer.tcp_sender import Acknowledged, SentSegment, TcpSender, Transmitted
from wskreplay.replayer.wsk_socket import (
    Completed,
    Returned,
    SendRequest,
    Transmit,
    Violation,
    WskEvent,
    WskSocket,
)


@dataclass(frozen=True)
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


Output = Returned | Completed | Violation | WireSegment


@dataclass(order=True)
class _Due:
    time_ns: int
    order: int
    kind: str = field(compare=False)
    item: object = field(compare=False, default=None)


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
    ) -> None:
        self.profile = profile
        self._stack_free = 0
        """When the host's stack hands TCP the bytes of the latest call (in call order)."""
        self.wsk = WskSocket(profile, category)
        self.tcp = TcpSender(profile.tcp, mss=mss, peer_window=path.receive_window)
        self.peer = peer if peer is not None else ParametricPeer(path)
        self.received = 0
        """Bytes of the peer's own stream received here (this side acknowledges them)."""
        self.now = 0
        self._due: list[_Due] = []
        self._order = 0
        if peer_reset_ns is not None:
            self._schedule(peer_reset_ns, "peer-reset")

    def _schedule(self, time_ns: int, kind: str, item: object = None) -> None:
        self._order += 1
        heapq.heappush(self._due, _Due(time_ns, self._order, kind, item))

    def next_event_time(self) -> int | None:
        """When the next thing is due (a packet, an ACK, a timer), or None."""
        times = [d for d in (self.tcp.next_timer(), self.peer.next_timer()) if d is not None]
        if self._due:
            times.append(self._due[0].time_ns)
        return min(times) if times else None

    def call(self, req: SendRequest, stack_delay_ns: int = 0) -> list[Output]:
        """A WskSendEx at ``req.time_ns``; its bytes reach TCP ``stack_delay_ns`` later (the
        host's own latency, taken from the recording), never before an earlier call's."""
        out = self.run_until(req.time_ns)
        self.now = max(self.now, req.time_ns)
        events = self.wsk.send(req)
        transmitted = any(isinstance(e, Transmit) for e in events)
        out += self._wsk_outputs(events, stack_delay_ns)
        if transmitted and req.irp is not None:
            out.append(self.wsk.returned(req.irp, self.now))
        return out

    def run_until(self, time_ns: int) -> list[Output]:
        """Everything due at or before ``time_ns``."""
        out: list[Output] = []
        while (t := self.next_event_time()) is not None and t <= time_ns:
            self.now = max(self.now, t)
            if self._due and self._due[0].time_ns == t:
                due = heapq.heappop(self._due)
                out += self._handle(due)
                continue
            if self.tcp.next_timer() == t:
                out += self._tcp_outputs(self.tcp.on_timer(t))
            if self.peer.next_timer() == t:
                for ack in self.peer.on_timer(t):
                    self._schedule(ack.time_ns, "ack", ack)
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
        out = self.run_until(time_ns)
        out += self._wsk_outputs(self.wsk.close(time_ns))
        out += self._tcp_outputs(self.tcp.reset(time_ns))
        return out

    def disconnect(self, time_ns: int, *, abortive: bool) -> list[Output]:
        out = self.run_until(time_ns)
        out += self._wsk_outputs(self.wsk.disconnect(time_ns, abortive=abortive))
        tcp = self.tcp.reset(time_ns) if abortive else self.tcp.close(time_ns)
        return out + self._tcp_outputs(tcp)

    def _handle(self, due: _Due) -> list[Output]:
        if due.kind == "arrive":
            seg = due.item
            assert isinstance(seg, SentSegment)
            for ack in self.peer.receive(seg, due.time_ns):
                self._schedule(ack.time_ns, "ack", ack)
            return []
        if due.kind == "ack":
            ack = due.item
            assert isinstance(ack, PeerAck)
            return self._from_peer(ack, due.time_ns)
        if due.kind == "write":
            e = due.item
            assert isinstance(e, Transmit)
            return self._tcp_outputs(
                self.tcp.write(e.length, nodelay=e.nodelay, time_ns=due.time_ns)
            )
        if due.kind == "peer-reset":
            wire = WireSegment(due.time_ns, False, self.peer.rcv_nxt, 0, TCP_RST | TCP_ACK)
            self.tcp.aborted()
            return [wire, *self._wsk_outputs(self.wsk.peer_reset(due.time_ns))]
        raise AssertionError(due.kind)

    def _from_peer(self, ack: PeerAck, time_ns: int) -> list[Output]:
        """A segment from the peer: its ACK and window for the sender, its data (this side
        acknowledges it at once), its FIN, or its RST."""
        flags = TCP_ACK | (ack.flags & (TCP_PSH | TCP_FIN | TCP_RST))
        wire = WireSegment(time_ns, False, ack.seq, ack.length, flags, ack.ack, ack.window)
        if ack.flags & TCP_RST:
            self.tcp.aborted()
            return [wire, *self._wsk_outputs(self.wsk.peer_reset(time_ns))]
        out: list[Output] = [wire]
        if ack.length or ack.flags & TCP_FIN:
            self.received = max(self.received, ack.seq + ack.length)
            fin = 1 if ack.flags & TCP_FIN else 0
            out.append(
                WireSegment(time_ns, True, self.tcp.nxt, 0, TCP_ACK, self.received + fin, 64240)
            )
        data = bool(ack.length or ack.flags & TCP_FIN)
        return out + self._tcp_outputs(
            self.tcp.on_ack(ack.ack, ack.window, time_ns, carries_data=data)
        )

    def _wsk_outputs(self, events: list[WskEvent], stack_delay_ns: int = 0) -> list[Output]:
        out: list[Output] = []
        for e in events:
            if isinstance(e, Transmit) and (stack_delay_ns or self._stack_free > e.time_ns):
                self._stack_free = max(self._stack_free, e.time_ns + stack_delay_ns)
                self._schedule(self._stack_free, "write", e)
            elif isinstance(e, Transmit):
                out += self._tcp_outputs(
                    self.tcp.write(e.length, nodelay=e.nodelay, time_ns=e.time_ns)
                )
            else:
                out.append(e)
        return out

    def _tcp_outputs(self, events: list) -> list[Output]:
        out: list[Output] = []
        for e in events:
            if isinstance(e, SentSegment):
                departure, arrival = self.peer.transmit(e)
                out.append(
                    WireSegment(
                        departure,
                        True,
                        e.seq,
                        e.length,
                        e.flags,
                        self.peer.rcv_nxt,
                        64240,
                        e.retransmission,
                    )
                )
                if arrival is not None:
                    self._schedule(arrival, "arrive", e)
            elif isinstance(e, Transmitted):
                out += self.wsk.transmitted(e.end, e.time_ns)
            elif isinstance(e, Acknowledged):
                out += self.wsk.acknowledged(e.end, e.time_ns)
        return out
