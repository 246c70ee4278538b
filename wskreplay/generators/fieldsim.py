"""A synthetic field recording: what an instrumented driver and pktmon would leave in one
``.etl``, with the ground truth kept, for tests, the sample traces and benchmarks.

Two sockets cover the send path's cases: socket 0 (IPv4, WskConnect) makes plain and
NODELAY sends, an immediate STATUS_SUCCESS, a send with an unsupported flag
(STATUS_NOT_SUPPORTED), one with ControlInfo, one at DISPATCH_LEVEL with an MDL offset,
then ``bulk_calls`` 16 KiB sends, and closes gracefully; socket 1 (IPv6, accepted) is
reset by its peer with two sends outstanding (one on the wire, one never sent: both
complete with STATUS_CONNECTION_RESET) and then refuses a send with
STATUS_FILE_FORCED_CLOSED. All times are multiples of 100 ns, so a 10 MHz QPC holds them
exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO

import numpy as np

from wskreplay.formats import etl_packets, pcap, pktmon, wsk
from wskreplay.formats import ntstatus as nt
from wskreplay.formats.etl_writer import EtlWriter
from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, build_tcp_frame
from wskreplay.recorder import etw_schema
from wskreplay.recorder.calls import RecordedCall

START_NS = 1_767_225_600_000_000_000
US = 1_000
MSS = 1460
BULK_CALL_BYTES = 16384
CONTROL_INFO = wsk.encode_cmsgs([wsk.ControlMessage(wsk.IPPROTO_IP, 3, b"\x10\0\0\0")])
IRP_BASE = 0xFFFFC000_12340000


@dataclass
class ExpectedCall(RecordedCall):
    """A call as the driver made it (UTC ns), and whether its bytes reached the wire."""

    on_wire: bool = True


@dataclass
class SocketSpec:
    local: tuple[str, int]
    remote: tuple[str, int]
    origin: int
    category: int


@dataclass
class Packet:
    time_ns: int
    frame: bytes
    outbound: bool


@dataclass
class FieldRecording:
    sockets: list[SocketSpec]
    calls: list[ExpectedCall] = field(default_factory=list)
    packets: list[Packet] = field(default_factory=list)
    events: list[tuple[int, int, str, dict]] = field(default_factory=list)
    """(time, order, contract event name, values), in time order once built."""


class _Connection:
    """One TCP connection's packets, from the recorded side's point of view."""

    def __init__(self, rec: FieldRecording, spec: SocketSpec, isn: int, peer_isn: int) -> None:
        self.rec = rec
        self.spec = spec
        self.isn, self.peer_isn = isn, peer_isn
        self.sent = 0
        self.received = 0

    def _out(self, t: int, flags: int, payload: bytes = b"", seq_add: int = 0) -> None:
        (la, lp), (ra, rp) = self.spec.local, self.spec.remote
        seq = self.isn + 1 + self.sent + seq_add
        frame = build_tcp_frame(
            la, lp, ra, rp, seq, self.peer_isn + 1 + self.received, flags, payload, window=64240
        )
        self.rec.packets.append(Packet(t, frame, True))

    def _in(self, t: int, flags: int, payload: bytes = b"", *, ack: int | None = None) -> None:
        (la, lp), (ra, rp) = self.spec.local, self.spec.remote
        acked = self.sent if ack is None else ack
        frame = build_tcp_frame(
            ra,
            rp,
            la,
            lp,
            self.peer_isn + 1 + self.received,
            self.isn + 1 + acked,
            flags,
            payload,
            window=65535,
        )
        self.rec.packets.append(Packet(t, frame, False))

    def handshake(self, t: int, *, local_opens: bool) -> None:
        (la, lp), (ra, rp) = self.spec.local, self.spec.remote
        mss = b"\x02\x04\x05\xb4"
        if local_opens:
            self.rec.packets.append(
                Packet(t, build_tcp_frame(la, lp, ra, rp, self.isn, 0, TCP_SYN, options=mss), True)
            )
            self.rec.packets.append(
                Packet(
                    t + 100 * US,
                    build_tcp_frame(
                        ra, rp, la, lp, self.peer_isn, self.isn + 1, TCP_SYN | TCP_ACK, options=mss
                    ),
                    False,
                )
            )
            self._out(t + 110 * US, TCP_ACK)
        else:
            self.rec.packets.append(
                Packet(
                    t,
                    build_tcp_frame(ra, rp, la, lp, self.peer_isn, 0, TCP_SYN, options=mss),
                    False,
                )
            )
            self.rec.packets.append(
                Packet(
                    t + 5 * US,
                    build_tcp_frame(
                        la, lp, ra, rp, self.isn, self.peer_isn + 1, TCP_SYN | TCP_ACK, options=mss
                    ),
                    True,
                )
            )
            self._in(t + 100 * US, TCP_ACK, ack=0)

    def send(self, t: int, data: bytes, *, spacing_ns: int = 2 * US) -> int:
        """``data`` as MSS segments from ``t``, PSH on the last; returns the last's time."""
        for k, at in enumerate(range(0, len(data), MSS)):
            piece = data[at : at + MSS]
            last = at + MSS >= len(data)
            self._out(t + k * spacing_ns, TCP_ACK | (TCP_PSH if last else 0), piece)
            self.sent += len(piece)
        return t + (max(len(data) - 1, 0) // MSS) * spacing_ns

    def peer_ack(self, t: int) -> None:
        self._in(t, TCP_ACK)

    def peer_send(self, t: int, data: bytes) -> None:
        self._in(t, TCP_ACK | TCP_PSH, data)
        self.received += len(data)
        self._out(t + 200 * US, TCP_ACK)

    def peer_reset(self, t: int) -> None:
        self._in(t, TCP_RST | TCP_ACK)

    def close(self, t: int) -> None:
        self._out(t, TCP_FIN | TCP_ACK)
        self.sent += 1
        self._in(t + 100 * US, TCP_FIN | TCP_ACK)
        self.received += 1
        self._out(t + 110 * US, TCP_ACK)


class _Driver:
    """Emits the contract events of one driver and remembers the truth."""

    def __init__(self, rec: FieldRecording, rng: np.random.Generator) -> None:
        self.rec = rec
        self.rng = rng
        self.irps = 0
        self.order = 0
        self.cursor: dict[tuple[int, bool], int] = {}

    def event(self, t: int, name: str, **values: object) -> None:
        self.order += 1
        self.rec.events.append((t, self.order, name, values))

    def connected(self, t: int, sid: int) -> None:
        spec = self.rec.sockets[sid]
        self.event(
            t,
            "SocketConnected",
            Socket=handle(sid),
            Category=spec.category,
            Family=wsk.AF_INET6 if ":" in spec.local[0] else wsk.AF_INET,
            LocalAddress=wsk.encode_sockaddr(*spec.local),
            RemoteAddress=wsk.encode_sockaddr(*spec.remote),
            Origin=spec.origin,
        )

    def send(
        self,
        sid: int,
        t: int,
        length: int,
        *,
        flags: int = 0,
        status: int = nt.STATUS_PENDING,
        offset: int = 0,
        control: bytes | None = None,
        irql: int = 0,
        irp: int | None = None,
        return_after_ns: int = 3 * US,
    ) -> ExpectedCall:
        if irp is None:
            irp = IRP_BASE + 0x200 * self.irps
            self.irps += 1
        accepted = nt.is_success(status)
        key = (sid, accepted)
        call = ExpectedCall(
            socket=sid,
            issue_ns=t,
            return_ns=t + return_after_ns,
            flags=flags,
            offset=offset,
            length=length,
            control_info=control,
            status=status,
            irp=irp,
            irql=irql,
            payload=self.rng.bytes(length),
            payload_length=length,
            stream_offset=self.cursor.get(key, 0),
        )
        self.cursor[key] = call.stream_offset + length
        self.rec.calls.append(call)
        if not accepted:
            call.on_wire = False
            self.complete(call, t + 800, status, 0)
        return call

    def complete(self, call: ExpectedCall, t: int, status: int, information: int) -> None:
        call.completion_ns, call.completion_status, call.information = t, status, information


def handle(sid: int) -> int:
    return 0xFFFFB000_00100000 + 0x1000 * sid


def field_recording(
    *, seed: int = 0, bulk_calls: int = 0, unexplained_bytes: int = 0
) -> FieldRecording:
    """The scenario of the module docstring, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    rec = FieldRecording(
        sockets=[
            SocketSpec(
                ("192.0.2.10", 49200), ("198.51.100.20", 445), 1, wsk.WSK_FLAG_CONNECTION_SOCKET
            ),
            SocketSpec(
                ("2001:db8::1", 8443), ("2001:db8::2", 51000), 3, wsk.WSK_FLAG_STREAM_SOCKET
            ),
        ]
    )
    drv = _Driver(rec, rng)
    a = _Connection(rec, rec.sockets[0], 0x1000_0000, 0x7000_0000)
    b = _Connection(rec, rec.sockets[1], 0xFFFF_F000, 0x2000_0000)
    t0 = START_NS + 1000 * US

    a.handshake(t0, local_opens=True)
    drv.connected(t0 + 120 * US, 0)
    b.handshake(t0 + 500 * US, local_opens=False)
    drv.connected(t0 + 610 * US, 1)

    def sent_and_acked(
        sid: int,
        conn: _Connection,
        call: ExpectedCall,
        wire_after: int,
        ack_after: int,
        complete_after: int,
    ) -> None:
        conn.send(call.issue_ns + wire_after, call.payload)
        conn.peer_ack(call.issue_ns + ack_after)
        drv.complete(
            call, call.issue_ns + ack_after + complete_after, nt.STATUS_SUCCESS, call.length
        )

    c0 = drv.send(0, t0 + 1000 * US, 1200)
    sent_and_acked(0, a, c0, 10 * US, 300 * US, 5 * US)
    b6 = drv.send(1, t0 + 1500 * US, 2000)
    sent_and_acked(1, b, b6, 10 * US, 300 * US, 6 * US)
    c1 = drv.send(0, t0 + 2000 * US, 300, flags=wsk.WSK_FLAG_NODELAY, return_after_ns=2500)
    sent_and_acked(0, a, c1, 4 * US, 300 * US, 4 * US)
    a.peer_send(t0 + 2500 * US, rng.bytes(180))
    c2 = drv.send(0, t0 + 3000 * US, 64, status=nt.STATUS_SUCCESS, return_after_ns=2 * US)
    a.send(c2.issue_ns + 5 * US, c2.payload)
    a.peer_ack(c2.issue_ns + 300 * US)
    drv.complete(c2, c2.issue_ns + 1500, nt.STATUS_SUCCESS, 64)
    b7 = drv.send(1, t0 + 3500 * US, 1000)
    b.send(b7.issue_ns + 10 * US, b7.payload)
    b8 = drv.send(1, t0 + 3600 * US, 800, flags=wsk.WSK_FLAG_NODELAY)
    b8.on_wire = False
    b.peer_reset(t0 + 3900 * US)
    drv.complete(b7, t0 + 3905 * US, nt.STATUS_CONNECTION_RESET, 0)
    drv.complete(b8, t0 + 3906 * US, nt.STATUS_CONNECTION_RESET, 0)
    drv.send(
        0,
        t0 + 4000 * US,
        100,
        flags=wsk.WSK_FLAG_OOB,
        status=nt.STATUS_NOT_SUPPORTED,
        return_after_ns=1 * US,
    )
    drv.send(1, t0 + 4200 * US, 400, status=nt.STATUS_FILE_FORCED_CLOSED, return_after_ns=1 * US)
    drv.event(t0 + 4500 * US, "Close", Socket=handle(1))
    c4 = drv.send(0, t0 + 5000 * US, 500, flags=wsk.WSK_FLAG_NODELAY, control=CONTROL_INFO)
    sent_and_acked(0, a, c4, 6 * US, 300 * US, 3 * US)
    c5 = drv.send(0, t0 + 6000 * US, 5000, offset=16, irql=2, irp=c0.irp)
    sent_and_acked(0, a, c5, 10 * US, 300 * US, 5 * US)
    t = t0 + 7000 * US
    for _ in range(bulk_calls):
        call = drv.send(
            0, t, BULK_CALL_BYTES, flags=wsk.WSK_FLAG_NODELAY if rng.random() < 0.3 else 0
        )
        sent_and_acked(0, a, call, int(rng.integers(2, 30)) * US, 150 * US, 4 * US)
        t += 200 * US
    if unexplained_bytes:
        a.send(t, rng.bytes(unexplained_bytes))
        t += 300 * US
    drv.event(t, "Disconnect", Socket=handle(0), Flags=0, Status=nt.STATUS_SUCCESS)
    a.close(t + 10 * US)
    drv.event(t + 500 * US, "Close", Socket=handle(0))
    rec.packets.sort(key=lambda p: p.time_ns)
    return rec


def _issued_values(call: ExpectedCall, cap: int) -> dict:
    return {
        "Socket": handle(call.socket),
        "Irp": call.irp,
        "Flags": call.flags,
        "Offset": call.offset,
        "Length": call.length,
        "ControlInfoPresent": int(call.control_info is not None),
        "ControlInfo": call.control_info or b"",
        "PayloadLength": call.payload_length,
        "Payload": call.payload[:cap],
    }


@dataclass(frozen=True)
class PktMonComponent:
    """A component PktMon watches, as it describes it (events 20, 30, 90), and the edge
    packets are logged at."""

    id: int
    kind: int
    name: str
    description: str
    properties: dict[int, int]
    edges: dict[int, str]
    logs_at: int


ETHERNET_STACK = (
    PktMonComponent(3, 2, "netvsc.sys", "Hyper-V Network Adapter", {1: 9}, {1: "Upper"}, 1),
    PktMonComponent(
        9, 3, "pacer.sys", "QoS Packet Scheduler", {1: 20, 2: 9}, {1: "Upper", 2: "Lower"}, 2
    ),
    PktMonComponent(
        6,
        3,
        "wfplwfs.sys",
        "WFP 802.3 MAC Layer",
        {1: 22, 2: 9, 3: 20},
        {1: "Upper", 2: "Lower"},
        2,
    ),
    PktMonComponent(25, 4, "tcpip.sys", "TCPIP", {2: 9}, {1: "Lower"}, 1),
)
"""An Ethernet adapter's components, from the wire up: a miniport, two filters (the
second above the first by its LowerIfIndex) and the IP protocol."""
WIFI_STACK = (
    PktMonComponent(40, 2, "wlan.sys", "Wi-Fi Adapter", {1: 12}, {1: "Upper"}, 1),
    PktMonComponent(
        41, 3, "nwifi.sys", "Native WiFi Filter", {1: 30, 2: 12}, {1: "Upper", 2: "Lower"}, 2
    ),
    PktMonComponent(23, 4, "tcpip.sys", "TCPIP6", {2: 12}, {1: "Lower"}, 1),
)
"""A Wi-Fi adapter's: its miniport logs 802.11 frames, the layers above it Ethernet."""
PKTMON_LAYOUTS = ("numbered", "described", "24h2")
APPEARANCE_SPACING_NS = 3 * US


def ethernet_to_80211(frame: bytes, outbound: bool) -> bytes:
    """The 802.11 QoS data frame a Wi-Fi adapter sends or receives for an Ethernet frame:
    to the access point (To DS) or from it (From DS), LLC/SNAP before the EtherType."""
    dst, src, etype, body = frame[0:6], frame[6:12], frame[12:14], frame[14:]
    bssid = bytes.fromhex("02aa00000001")
    if outbound:
        fc, addrs = b"\x88\x01", bssid + src + dst
    else:
        fc, addrs = b"\x88\x02", dst + bssid + src
    return fc + b"\0\0" + addrs + b"\0\0" + b"\0\0" + b"\xaa\xaa\x03\0\0\0" + etype + body


def _pktmon_appearances(
    w: EtlWriter, packets: list[Packet], layout: str, appearances: int
) -> list[tuple[int, Callable[[], None]]]:
    """(time, emit) for every appearance of every packet, per ``layout``:
    ``numbered`` ``appearances`` copies 1 us apart at component 1 (no component events);
    ``described`` the Ethernet stack's components numbered 1..N in one PktGroupId;
    ``24h2`` (Windows 11 24H2 and later) AppearanceCount 0 and a PktGroupId per
    appearance, IPv6 packets through the Wi-Fi stack with 802.11 at its miniport."""
    out: list[tuple[int, Callable[[], None]]] = []
    group = 0
    for p in packets:
        dirtag = 2 if p.outbound else 1
        if layout == "numbered":
            for k in range(appearances):
                at = p.time_ns - (appearances - 1 - k) * US if p.outbound else p.time_ns + k * US
                emit = partial(w.pktmon_packet, at, group, p.frame, appearance=k + 1, dirtag=dirtag)
                out.append((at, emit))
            group += 1
            continue
        wifi = layout == "24h2" and p.frame[12:14] == b"\x86\xdd"
        stack = WIFI_STACK if wifi else ETHERNET_STACK
        path = list(reversed(stack)) if p.outbound else list(stack)
        for k, comp in enumerate(path):
            steps = len(path) - 1 - k if p.outbound else k
            at = p.time_ns + (-1 if p.outbound else 1) * steps * APPEARANCE_SPACING_NS
            radio = wifi and comp is stack[0]
            emit = partial(
                w.pktmon_packet,
                at,
                group,
                ethernet_to_80211(p.frame, p.outbound) if radio else p.frame,
                appearance=k + 1 if layout == "described" else 0,
                dirtag=dirtag,
                packet_type=2 if radio else 1,
                component=comp.id,
                edge=comp.logs_at,
            )
            out.append((at, emit))
            group += layout == "24h2"
        group += layout == "described"
    return out


def write_field_etl(
    rec: FieldRecording,
    f: BinaryIO,
    *,
    compress: bool = True,
    payload_cap: int = etw_schema.MAX_PAYLOAD_CAPTURE,
    packets: bool = True,
    appearances: int = 2,
    packet_source: str = "pktmon",
    capture_from_ns: int = 0,
    pktmon_layout: str = "numbered",
) -> None:
    """The recording as one ``.etl``: contract events and (optionally) the packets, as
    PktMon events (``pktmon_layout``: see :func:`_pktmon_appearances`; the wire-side
    appearance at the wire time) or, with ``packet_source="ndis"``, as
    NDIS-PacketCapture fragments (two per frame) like ``netsh trace start capture=yes``
    writes. With a described PktMon layout the file also carries PktMon's component
    events (at the end, as PktMon logs them when it stops) and the EventMetadata schemas
    of its events (at the start). Packets before ``capture_from_ns`` are left out, as
    when the capture started after the connection."""
    w = EtlWriter(f, start_ns=START_NS, compress=compress)
    records: list[tuple[int, int, Callable[[], None]]] = []
    order = 0

    def add(t: int, emit: Callable[[], None]) -> None:
        nonlocal order
        order += 1
        records.append((t, order, emit))

    for call in rec.calls:
        values = _issued_values(call, payload_cap)
        values.update(
            QpcEntry=w.qpc(call.issue_ns),
            QpcReturn=w.qpc(call.return_ns),
            Status=call.status,
            Irql=call.irql,
        )
        add(
            call.return_ns,
            lambda v=values, t=call.return_ns: etw_schema.write_event(w, t, "SendExIssued", **v),
        )
        if call.completion_ns is not None:
            add(
                call.completion_ns,
                lambda c=call: etw_schema.write_event(
                    w,
                    c.completion_ns,
                    "SendExCompleted",
                    Irp=c.irp,
                    Status=c.completion_status,
                    Information=c.information,
                ),
            )
    for t, _o, name, values in rec.events:
        add(t, lambda t=t, n=name, v=values: etw_schema.write_event(w, t, n, **v))
    captured = [p for p in rec.packets if p.time_ns >= capture_from_ns]
    if packets and packet_source == "ndis":
        for p in captured:
            kw = etl_packets.KW_SEND if p.outbound else etl_packets.KW_RECEIVE
            half = len(p.frame) // 2
            add(
                p.time_ns,
                lambda p=p, kw=kw, half=half: (
                    w.ndis_fragment(p.time_ns, p.frame[:half], kw | etl_packets.KW_PACKET_START),
                    w.ndis_fragment(p.time_ns, p.frame[half:], kw | etl_packets.KW_PACKET_END),
                ),
            )
    elif packets:
        for at, emit in _pktmon_appearances(w, captured, pktmon_layout, appearances):
            add(at, emit)
        if pktmon_layout != "numbered":
            first = min((r[0] for r in records), default=START_NS)
            last = max((r[0] for r in records), default=START_NS)
            for key in sorted(pktmon.BUILTIN):
                add(first - 1, lambda s=pktmon.BUILTIN[key]: w.event_schema(first - 1, s))
            for comp in (*ETHERNET_STACK, *WIFI_STACK):
                add(
                    last + 1,
                    lambda c=comp: w.pktmon_component(
                        last + 1, c.id, c.kind, c.name, c.description, c.properties, c.edges
                    ),
                )
    records.sort(key=lambda r: (r[0], r[1]))
    for _t, _o, emit in records:
        emit()
    w.close()


def write_field_pcapng(rec: FieldRecording, f: BinaryIO, *, clock_offset_ns: int = 0) -> None:
    """The packets alone, as a capture on another clock: ``capture = recorder + offset``."""
    w = pcap.PcapngWriter(f, comment="wskreplay fieldsim")
    for p in rec.packets:
        w.packet(
            p.time_ns + clock_offset_ns,
            pcap.LINKTYPE_ETHERNET,
            p.frame,
            direction=pcap.DIRECTION_OUT if p.outbound else pcap.DIRECTION_IN,
        )
