"""``--dissect``: the first differing packet of a stream, on both sides, through Wireshark's
dissectors (pyshark driving tshark), and the protocol fields that differ, so a difference
reads as "smb2.msg_id 5 in A, 6 in B" rather than as bytes.

Each side's packet is rebuilt from its trace: the segment that carried the first
differing byte, with its payload from the trace's stream, between the socket's recorded
endpoints, written alone to a pcapng file and dissected there."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wskreplay.diff.compare import Difference, DiffResult
from wskreplay.errors import InputError
from wskreplay.formats.pcap import LINKTYPE_ETHERNET, PcapngWriter
from wskreplay.formats.tcpip import TCP_ACK, TCP_PSH, build_tcp_frame
from wskreplay.trace.model import Direction, Trace

TRANSPORT_LAYERS = {"eth", "ip", "ipv6", "tcp", "frame", "_ws.malformed"}
"""Layers rebuilt by wskreplay itself: their fields say nothing about the difference."""


@dataclass(frozen=True)
class FieldDifference:
    field: str
    a: str | None
    b: str | None
    """The field's value on each side (None: the side's packet has no such field)."""

    def as_dict(self) -> dict[str, str | None]:
        return {"field": self.field, "a": self.a, "b": self.b}


def _packet(trace: Trace, sid: int, direction: Direction, offset: int) -> bytes | None:
    """The frame of the segment of ``sid``'s stream that carried byte ``offset`` (the last
    one when no segment did: the stream was longer than its wire)."""
    seg = trace.segments
    rows = np.flatnonzero(
        (seg.column("socket") == sid)
        & (seg.column("direction") == int(direction))
        & (seg.column("length") > 0)
    )
    stream = trace.streams.get((sid, direction))
    if not len(rows) or stream is None or stream.data is None:
        return None
    rows = rows[np.argsort(seg.column("time_ns")[rows], kind="stable")]
    seq = seg.column("seq")[rows].astype(np.int64)
    end = seq + seg.column("length")[rows].astype(np.int64)
    hit = np.flatnonzero((seq <= offset) & (offset < end))
    row = int(rows[hit[0]]) if len(hit) else int(rows[-1])
    start, length = int(seg.column("seq")[row]), int(seg.column("length")[row])
    payload = bytes(stream.data[start : start + length])
    sock = trace.sockets[sid]
    local, remote = (sock.local_addr, sock.local_port), (sock.remote_addr, sock.remote_port)
    src, dst = (local, remote) if direction == Direction.OUT else (remote, local)
    try:
        return build_tcp_frame(
            src[0], src[1], dst[0], dst[1], start + 1, 1, TCP_ACK | TCP_PSH, payload
        )
    except ValueError:
        return None  # the trace has no usable addresses for this socket


def _fields(frame: bytes, work: Path, name: str) -> dict[str, str]:
    try:
        import pyshark
    except ImportError:
        raise InputError(None, "--dissect needs pyshark (pip install pyshark) and tshark") from None
    path = work / f"{name}.pcapng"
    with open(path, "wb") as f:
        PcapngWriter(f).packet(0, LINKTYPE_ETHERNET, frame)
    capture = pyshark.FileCapture(str(path), keep_packets=False)
    try:
        packet = next(iter(capture))
        values: dict[str, str] = {}
        for layer in packet.layers:
            if layer.layer_name in TRANSPORT_LAYERS:
                continue
            for key, value in layer._all_fields.items():
                if key and not key.startswith("_ws."):
                    values[key] = str(value)
        return values
    finally:
        capture.close()


def dissect(a: Trace, b: Trace, difference: Difference) -> list[FieldDifference] | None:
    """The protocol fields in which the two packets around a ``wire`` difference differ;
    None when a side has no packet there (nothing on its wire)."""
    direction = Direction.OUT if difference.a.get("direction") == "outbound" else Direction.IN
    frame_a = _packet(a, difference.socket, direction, difference.a["offset"])
    frame_b = _packet(b, difference.b["socket"], direction, difference.b["offset"])
    if frame_a is None or frame_b is None:
        return None
    with tempfile.TemporaryDirectory(prefix="wskreplay-dissect-") as tmp:
        fa, fb = _fields(frame_a, Path(tmp), "a"), _fields(frame_b, Path(tmp), "b")
    return [
        FieldDifference(key, fa.get(key), fb.get(key))
        for key in sorted(set(fa) | set(fb))
        if fa.get(key) != fb.get(key)
    ]


def dissect_result(a: Trace, b: Trace, result: DiffResult) -> None:
    """Fill ``result.dissections``: for each wire difference, the fields that differ."""
    for d in result.differences:
        if d.kind != "wire":
            continue
        fields = dissect(a, b, d)
        result.dissections.append(
            {
                "socket": d.socket,
                "direction": d.a["direction"],
                "offset": d.a["offset"],
                "fields": None if fields is None else [f.as_dict() for f in fields],
            }
        )
