"""Build small captures for the cases the shared files lack (written by the tests, read
back by both tshark and wskreplay)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from wskreplay.formats.tcpip import build_tcp_frame


@dataclass
class Endpoint:
    ip: str
    port: int


def tcp_frame(
    src: Endpoint,
    dst: Endpoint,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    window: int = 65535,
    options: bytes = b"",
) -> bytes:
    """An Ethernet + IPv4/IPv6 + TCP frame (IPv6 when the addresses are)."""
    return build_tcp_frame(
        src.ip,
        src.port,
        dst.ip,
        dst.port,
        seq,
        ack,
        flags,
        payload,
        window=window,
        options=options,
    )


def write_pcap(
    path,
    packets: list[tuple[int, bytes]],
    *,
    endian: str = "<",
    nano: bool = False,
    linktype: int = 1,
    snaplen: int = 65535,
) -> None:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = bytearray(struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
    for ts, frame in packets:
        sec, frac = divmod(ts, 10**9)
        if not nano:
            frac //= 1000
        data = frame[:snaplen]
        out += struct.pack(endian + "IIII", sec, frac, len(data), len(frame)) + data
    with open(path, "wb") as f:
        f.write(out)


def write_pcapng(
    path, packets: list[tuple[int, bytes]], *, endian: str = "<", linktype: int = 1
) -> None:
    """pcapng in either byte order, microsecond timestamps (the default if_tsresol)."""

    def block(btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return (
            struct.pack(endian + "II", btype, 12 + len(body))
            + body
            + struct.pack(endian + "I", 12 + len(body))
        )

    out = bytearray(block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
    out[:4] = b"\x0a\x0d\x0d\x0a"
    out += block(1, struct.pack(endian + "HHI", linktype, 0, 0))
    for ts, frame in packets:
        us = ts // 1000
        out += block(
            6,
            struct.pack(endian + "IIIII", 0, us >> 32, us & 0xFFFFFFFF, len(frame), len(frame))
            + frame,
        )
    with open(path, "wb") as f:
        f.write(out)


SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def conversation(
    client_isn: int,
    server_isn: int,
    segments: list[tuple[str, int, bytes]],
    *,
    v6: bool = False,
    server_window: list[int] | None = None,
    syn_options: bytes = b"\x02\x04\x05\xb4",
    t0: int = 1_700_000_000_123_456_000,
) -> list[tuple[int, bytes]]:
    """Handshake, then ``segments`` as (sender 'c'/'s', offset in its stream, payload), then
    FIN from each side. Acks follow what the other side has sent in full so far."""
    c = Endpoint("2001:db8::1" if v6 else "192.0.2.1", 40000)
    s = Endpoint("2001:db8::2" if v6 else "198.51.100.2", 445)
    mss = syn_options
    frames = [
        tcp_frame(c, s, client_isn, 0, SYN, options=mss),
        tcp_frame(s, c, server_isn, client_isn + 1, SYN | ACK, options=mss),
        tcp_frame(c, s, client_isn + 1, server_isn + 1, ACK),
    ]
    sent = {"c": 0, "s": 0}
    for i, (who, offset, payload) in enumerate(segments):
        src, dst = (c, s) if who == "c" else (s, c)
        isn, peer_isn = (client_isn, server_isn) if who == "c" else (server_isn, client_isn)
        other = "s" if who == "c" else "c"
        window = server_window[i] if (server_window and who == "s") else 65535
        frames.append(
            tcp_frame(
                src,
                dst,
                isn + 1 + offset,
                peer_isn + 1 + sent[other],
                ACK | PSH,
                payload,
                window=window,
            )
        )
        sent[who] = max(sent[who], offset + len(payload))
    frames.append(
        tcp_frame(c, s, client_isn + 1 + sent["c"], server_isn + 1 + sent["s"], FIN | ACK)
    )
    frames.append(
        tcp_frame(s, c, server_isn + 1 + sent["s"], client_isn + 2 + sent["c"], FIN | ACK)
    )
    return [(t0 + 1000 * i + 7, f) for i, f in enumerate(frames)]


def tiny_connections_pcap(path, connections: int) -> None:
    """A pcap of ``connections`` one-packet TCP connections (one data byte each, every one
    from another client address and port), built with numpy: millions in seconds."""
    import numpy as np

    frame = bytearray(build_tcp_frame("10.0.0.1", 1024, "192.0.2.1", 445, 1, 0, 0x18, b"x"))
    size = len(frame)
    record = struct.pack("<IIII", 0, 0, size, size) + bytes(frame)
    rows = np.frombuffer(record * connections, dtype=np.uint8).reshape(connections, -1).copy()
    i = np.arange(connections, dtype=np.uint32)
    rows[:, 4:8] = (i % 1_000_000).astype("<u4").view(np.uint8).reshape(-1, 4)
    rows[:, 0:4] = (i // 1_000_000).astype("<u4").view(np.uint8).reshape(-1, 4)
    ip = 16 + 14
    rows[:, ip + 13] = (i >> 16).astype(np.uint8)
    rows[:, ip + 14] = (i >> 8).astype(np.uint8)
    rows[:, ip + 15] = i.astype(np.uint8)
    rows[:, ip + 20 : ip + 22] = (1024 + i % 60000).astype(">u2").view(np.uint8).reshape(-1, 2)
    rows[:, ip + 10 : ip + 12] = 0
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        f.write(rows.tobytes())
