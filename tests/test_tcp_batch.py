"""All connections reassembled at once (wskreplay/recorder/tcp_batch.py) equal the reference,
one connection at a time (tcp._connection), in every field of every connection and
direction: on every shared capture and ETL recording, on the benchmark's generated
capture (loss, retransmission, reordering), on thousands of one-packet connections, and on
hypothesis-generated captures (shared 4-tuples, sequence numbers about to wrap, missing
handshakes, overlapping copies that differ, gaps, resets, window scales)."""

from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wskreplay.formats import pcap
from wskreplay.formats.etl_packets import read_capture
from wskreplay.formats.tcpip import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN
from wskreplay.recorder import tcp, tcp_batch

from .capgen import Endpoint, tcp_frame, tiny_connections_pcap, write_pcap
from .conftest import REPO, SHARED_DATA
from .reassembly_oracle import assert_same, both

sys.path.insert(0, str(REPO / "benchmarks"))
from gen_capture import generate  # noqa: E402

CAPTURES = sorted(p for p in SHARED_DATA.glob("*/*") if ".pcap" in p.name or p.suffix == ".etl") + [
    REPO / "traces" / "field.etl"
]


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_every_shared_capture(path):
    assert_same(*both(read_capture(str(path))))


def test_the_generated_benchmark_capture(tmp_path):
    path = tmp_path / "generated.pcap"
    generate(str(path), 30_000, seed=3, per_connection=60)
    batch, reference = both(pcap.read_frames(path))
    assert len(batch) > 300
    assert_same(batch, reference)


@pytest.mark.parametrize("batch", [1, 500])
def test_connections_a_batch_at_a_time(monkeypatch, tmp_path, batch):
    """Each connection's result is its own rows': reassembling a few connections at a time
    changes nothing, and the pages its reads mapped are let go between batches."""
    path = tmp_path / "generated.pcap"
    generate(str(path), 6_000, seed=8, per_connection=40)
    monkeypatch.setattr(tcp_batch, "BATCH_SEGMENTS", batch)
    frames = pcap.read_frames(path)
    batched, reference = both(frames)
    assert len(batched) > 50
    assert_same(batched, reference)
    notes: list[int] = []
    decoded = tcp.decode(frames, tcp.CaptureOptions().decode)
    groups = tcp.group_by_connection(decoded.segments)
    tcp_batch.connections(
        decoded.segments, groups, decoded.buffer, decoded.report.paths.paths, notes.append
    )
    looks = notes.count(tcp_batch.RELEASE_SPAN)
    assert looks == len(groups) if batch == 1 else 0 < looks < len(groups)


def test_thousands_of_one_packet_connections(tmp_path):
    path = tmp_path / "tiny.pcap"
    tiny_connections_pcap(path, 5000)
    batch, reference = both(pcap.read_frames(path))
    assert len(batch) == 5000
    assert_same(batch, reference)


def test_streams_too_far_apart_for_one_key_are_assembled_one_by_one(monkeypatch, tmp_path):
    path = tmp_path / "generated.pcap"
    generate(str(path), 5_000, seed=4, per_connection=50)
    monkeypatch.setattr(tcp_batch, "_KEY_LIMIT", 1000)
    assert_same(*both(pcap.read_frames(path)))


HOSTS = [Endpoint("192.0.2.1", 40000), Endpoint("192.0.2.1", 40001), Endpoint("2001:db8::1", 40000)]
SERVERS = [Endpoint("198.51.100.2", 445), Endpoint("2001:db8::2", 443)]


@st.composite
def captures(draw):
    """Segments of a few connections, some sharing a 4-tuple's either direction: random
    flags (handshakes, resets, FINs present or not), sequence numbers near 2**32, payloads
    that overlap earlier ones with the same or other bytes, out of order and with holes."""
    packets = []
    isn = {}
    for k in range(draw(st.integers(1, 60))):
        client = draw(st.sampled_from(HOSTS[:2] if k % 2 else HOSTS))
        server = draw(st.sampled_from(SERVERS if ":" in client.ip else SERVERS[:1]))
        outbound = draw(st.booleans())
        src, dst = (client, server) if outbound else (server, client)
        key = (src.ip, src.port, dst.ip, dst.port)
        if key not in isn:
            isn[key] = draw(st.sampled_from([0, 1000, (1 << 32) - 3000, (1 << 32) - 1]))
        flags = draw(
            st.sampled_from(
                [TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, TCP_ACK | TCP_PSH, TCP_FIN | TCP_ACK,
                 TCP_RST, TCP_ACK | TCP_PSH]
            )
        )  # fmt: skip
        offset = draw(st.integers(0, 4000))
        size = 0 if flags & (TCP_SYN | TCP_RST) else draw(st.sampled_from([0, 1, 7, 100, 1460]))
        fill = draw(st.sampled_from([b"a", b"b"]))
        options = b"\x02\x04\x05\xb4\x03\x03\x07" + b"\x00" if flags & TCP_SYN else b""
        seq = (isn[key] + offset) % (1 << 32)
        ack = draw(st.integers(0, (1 << 32) - 1))
        window = draw(st.sampled_from([0, 512, 65535]))
        frame = tcp_frame(src, dst, seq, ack, flags, fill * size, window=window, options=options)
        packets.append((1_700_000_000_000_000_000 + 1000 * k, frame))
    return packets


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(captures())
def test_generated_captures(tmp_path, packets):
    path = tmp_path / "generated.pcap"
    write_pcap(path, packets)
    assert_same(*both(pcap.read_frames(path)))


def test_reassemble_uses_the_batch_and_the_reference_on_request(monkeypatch, tmp_path):
    path = tmp_path / "tiny.pcap"
    tiny_connections_pcap(path, 10)
    calls = []
    monkeypatch.setattr(tcp_batch, "connections", lambda *a, **k: calls.append(a) or [])
    assert tcp.reassemble(pcap.read_frames(path)).connections == [] and len(calls) == 1
    monkeypatch.setenv("WSKREPLAY_PURE_PYTHON", "1")
    assert len(tcp.reassemble(pcap.read_frames(path)).connections) == 10 and len(calls) == 1
