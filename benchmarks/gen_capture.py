"""A large synthetic TCP capture for benchmarks: many interleaved connections, MSS-sized
data, delayed ACKs, responses, about 1% loss (retransmitted later) and 0.5% reordering.

    python benchmarks/gen_capture.py OUT.pcap [--packets 1000000] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import struct

import numpy as np

ETH = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
IP_HEAD = struct.Struct("!BBHHHBBH4s4s")
TCP_HEAD = struct.Struct("!HHIIBBHHH")
REC = struct.Struct("<IIII")
SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01


def _frame(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: memoryview,
) -> bytes:
    tcp = TCP_HEAD.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 65535, 0, 0)
    ip = IP_HEAD.pack(0x45, 0, 40 + len(payload), 0, 0x4000, 64, 6, 0, src, dst)
    return b"".join((ETH, ip, tcp, payload))


def connection_packets(
    rng: np.random.Generator, index: int, pool: memoryview, start_ns: int, segments: int
) -> list[tuple[int, bytes]]:
    client = bytes([10, (index >> 16) & 255, (index >> 8) & 255, index & 255])
    server = bytes([192, 0, 2, 1 + index % 200])
    cport, sport = 1024 + index % 60000, 445
    cisn, sisn = int(rng.integers(0, 1 << 32)), int(rng.integers(0, 1 << 32))
    rtt = int(rng.integers(50_000, 2_000_000))
    empty = pool[:0]

    def to_server(sent: int, acked: int, flags: int, payload: memoryview = empty) -> bytes:
        return _frame(
            client, server, cport, sport, cisn + 1 + sent, sisn + 1 + acked, flags, payload
        )

    def to_client(sent: int, acked: int, flags: int, payload: memoryview = empty) -> bytes:
        return _frame(
            server, client, sport, cport, sisn + 1 + sent, cisn + 1 + acked, flags, payload
        )

    t = start_ns
    out = [
        (t, _frame(client, server, cport, sport, cisn, 0, SYN, empty)),
        (t + rtt, _frame(server, client, sport, cport, sisn, cisn + 1, SYN | ACK, empty)),
        (t + rtt + 10_000, to_server(0, 0, ACK)),
    ]
    t += rtt + 20_000
    sizes = np.where(rng.random(segments) < 0.8, 1448, rng.integers(1, 1448, segments))
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    lost = rng.random(segments) < 0.01
    order = np.arange(segments)
    for i in np.flatnonzero(rng.random(segments - 1) < 0.005):
        order[i], order[i + 1] = order[i + 1], order[i]
    pending: list[int] = []
    server_sent = 0
    for n, i in enumerate(order.tolist()):
        t += 12_000
        off, size = int(offsets[i]), int(sizes[i])
        at = (index * 7919 + off) % (len(pool) - 2048)
        out.append(
            (-1 if lost[i] else t, to_server(off, server_sent, ACK | PSH, pool[at : at + size]))
        )
        if lost[i]:
            pending.append(len(out) - 1)
        if n % 2 == 1:
            out.append((t + rtt, to_client(server_sent, off + size, ACK)))
        if n % 50 == 49:
            reply = int(rng.integers(40, 400))
            at = (index * 104729 + server_sent) % (len(pool) - 512)
            out.append(
                (
                    t + rtt + 5_000,
                    to_client(server_sent, off + size, ACK | PSH, pool[at : at + reply]),
                )
            )
            server_sent += reply
        if pending and n % 3 == 2:
            k = pending.pop(0)
            out[k] = (t + 3 * rtt, out[k][1])
    for k in pending:
        out[k] = (t + 4 * rtt, out[k][1])
    end = int(offsets[-1] + sizes[-1])
    t += 5 * rtt
    out.append((t, to_server(end, server_sent, FIN | ACK)))
    out.append((t + rtt, to_client(server_sent, end + 1, FIN | ACK)))
    return out


BLOCK_CONNECTIONS = 1000
"""Connections generated before the records older than the next one's start are written:
a connection starts 2 ms after the previous one and lasts far less than 2 s, so only a
block's records are held (a 10 GB capture is written in bounded memory)."""


def generate(path: str, packets: int = 1_000_000, seed: int = 1, per_connection: int = 400) -> int:
    rng = np.random.default_rng(seed)
    pool = memoryview(rng.integers(0, 256, 8 << 20, dtype=np.uint8).tobytes())
    pending: list[tuple[int, bytes]] = []
    written = index = 0
    base = 1_700_000_000_000_000_000
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))

        def write(records: list[tuple[int, bytes]]) -> None:
            for ts, frame in records:
                sec, ns = divmod(ts, 10**9)
                f.write(REC.pack(sec, ns, len(frame), len(frame)))
                f.write(frame)

        while written + len(pending) < packets:
            pending.extend(
                connection_packets(rng, index, pool, base + index * 2_000_000, per_connection)
            )
            index += 1
            if index % BLOCK_CONNECTIONS == 0:
                pending.sort(key=lambda r: r[0])
                cut = bisect.bisect_left(pending, base + index * 2_000_000, key=lambda r: r[0])
                write(pending[:cut])
                written += cut
                del pending[:cut]
        pending.sort(key=lambda r: r[0])
        write(pending)
    return written + len(pending)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("out")
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(generate(args.out, args.packets, args.seed), "packets written to", args.out)
