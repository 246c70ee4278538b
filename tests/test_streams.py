"""`wskreplay streams` against tshark's own TCP reassembly, on real and generated captures."""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path

import pytest

from . import capgen
from .conftest import SHARED_DATA, assert_one_line_error, run_cli
from .tshark_oracle import follow, sha256, stream_count

CAPTURES = sorted((SHARED_DATA / "pcap").glob("*")) + sorted((SHARED_DATA / "replay").glob("*"))
DAMAGED = {
    "suricata-verify__http-mime-truncated.pcap": (2715459, "record header cut short"),
    "gopacket__be_test901.pcapng": (480, "unsupported pcapng section version 2.0"),
    "tcpdump__timestamp_invalid_nano.pcap": (116, "timestamp fraction 1000000000"),
}


def streams_json(path: Path, *extra: str) -> dict:
    return json.loads(_streams_output(path, extra))


@functools.cache
def _streams_output(path: Path, extra: tuple[str, ...]) -> str:
    proc = run_cli("streams", str(path), "--json", "--partial-ok", *extra)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.stdout


def assert_matches_tshark(path: Path, doc: dict, decode_as: tuple[str, ...] = ()) -> int:
    """Every direction equals tshark's follow output (before the first gap, where one is)."""
    assert len(doc["connections"]) == stream_count(str(path), decode_as)
    compared = 0
    for index, conn in enumerate(doc["connections"]):
        followed = follow(str(path), index, decode_as)
        sides = {conn["client"]: conn["client_to_server"], conn["server"]: conn["server_to_client"]}
        assert {followed.node0, followed.node1} <= set(sides) | {""}, (index, followed.node0)
        for node, data in (
            (followed.node0, followed.from_node0),
            (followed.node1, followed.from_node1),
        ):
            if not node:
                continue
            ours = sides[node]
            if not ours["gaps"]:
                assert ours["sha256"] == sha256(data), (path.name, index, node)
                assert ours["bytes"] == len(data)
                compared += 1
    return compared


@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_shared_capture_matches_tshark(path, tmp_path):
    doc = streams_json(path)
    assert doc["complete"] == (path.name not in DAMAGED)
    assert_matches_tshark(path, doc)
    gapped = [
        (i, k)
        for i, c in enumerate(doc["connections"])
        for k in ("client_to_server", "server_to_client")
        if c[k]["gaps"]
    ]
    if gapped:
        run_cli("streams", str(path), "--partial-ok", "--dump", str(tmp_path))
        for index, key in gapped:
            conn = doc["connections"][index]
            node = conn["client"] if key == "client_to_server" else conn["server"]
            followed = follow(str(path), index)
            data = followed.from_node0 if followed.node0 == node else followed.from_node1
            # The dump holds the bytes present; the first gap starts after the first
            # ``gaps[0][0]`` of them.
            present = (tmp_path / f"{index:05d}-{key}.bin").read_bytes()
            before = present[: conn[key]["gaps"][0][0]]
            assert data[: len(before)] == before, (path.name, index, key)


def test_every_shared_tcp_direction_is_compared():
    total = 0
    for path in CAPTURES:
        total += assert_matches_tshark(path, streams_json(path))
    assert total >= 750


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_captures_report_what_they_read(name):
    path = SHARED_DATA / "pcap" / name
    offset, what = DAMAGED[name]
    proc = run_cli("streams", str(path), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["complete"] is False
    (line,) = proc.stderr.strip().splitlines()
    assert str(path) in line and f"offset {offset}" in line and what in line
    assert run_cli("streams", str(path), "--json", "--partial-ok").returncode == 1


def test_empty_capture_has_no_connections():
    doc = streams_json(SHARED_DATA / "pcap" / "tcpdump__empty.pcapng")
    assert doc == {
        "file": str(SHARED_DATA / "pcap" / "tcpdump__empty.pcapng"),
        "packets": 0,
        "tcp_packets": 0,
        "frames": {"read": 0, "tcp": 0, "other": 0, "undecoded": 0},
        "undecoded": {},
        "link_types": [],
        "encapsulations": [],
        "connections": [],
        "complete": True,
    }


def test_record_claiming_a_huge_frame(tmp_path):
    data = bytearray((SHARED_DATA / "pcap" / "zeek__tcp_fin_retransmission.pcap").read_bytes())
    struct.pack_into("<I", data, 24 + 8, 3_900_000_000)
    path = tmp_path / "huge.pcap"
    path.write_bytes(bytes(data))
    proc = run_cli("streams", str(path), "--json")
    assert_one_line_error(proc, str(path), "offset 24", "3900000000-byte frame")
    assert json.loads(proc.stdout)["packets"] == 0


def test_not_a_capture(tmp_path):
    path = tmp_path / "x.pcap"
    path.write_bytes(b"hello world, not a capture")
    assert_one_line_error(run_cli("streams", str(path)), str(path), "not a pcap or pcapng file")


# Generated edge cases, each checked against tshark too.


def _payload(n: int, seed: int) -> bytes:
    return bytes((seed * 131 + i * 7) % 251 for i in range(n))


def _check_generated(tmp_path: Path, name: str, packets, **writer) -> dict:
    path = tmp_path / name
    if name.endswith(".pcapng"):
        capgen.write_pcapng(path, packets, **writer)
    else:
        capgen.write_pcap(path, packets, **writer)
    doc = streams_json(path)
    assert doc["complete"]
    assert assert_matches_tshark(path, doc) >= 1
    return doc


def test_sequence_numbers_wrap_past_2_to_the_32(tmp_path):
    segs = [("c", 500 * i, _payload(500, i)) for i in range(12)]
    doc = _check_generated(tmp_path, "wrap.pcap", capgen.conversation((1 << 32) - 2000, 5, segs))
    c2s = doc["connections"][0]["client_to_server"]
    assert c2s["bytes"] == 6000 and c2s["gaps"] == []
    assert c2s["sha256"] == sha256(b"".join(p for _, _, p in segs))


def test_overlapping_retransmission_with_different_bytes_keeps_the_first_copy(tmp_path):
    first, second = _payload(400, 1), bytes(400)
    segs = [("c", 0, first), ("c", 200, second), ("c", 600, _payload(100, 2))]
    doc = _check_generated(tmp_path, "overlap.pcap", capgen.conversation(1000, 2000, segs))
    c2s = doc["connections"][0]["client_to_server"]
    assert c2s["sha256"] == sha256(first + second[200:] + _payload(100, 2))


def test_out_of_order_arrival(tmp_path):
    parts = [_payload(300, i) for i in range(5)]
    segs = [
        ("c", 0, parts[0]),
        ("c", 600, parts[2]),
        ("c", 300, parts[1]),
        ("c", 1200, parts[4]),
        ("c", 900, parts[3]),
    ]
    doc = _check_generated(tmp_path, "ooo.pcap", capgen.conversation(7, 9, segs))
    assert doc["connections"][0]["client_to_server"]["sha256"] == sha256(b"".join(parts))


def test_zero_window_and_window_probe(tmp_path):
    segs = [
        ("c", 0, _payload(1000, 1)),
        ("s", 0, b"ok"),
        ("c", 1000, b"x"),
        ("s", 2, b"go"),
        ("c", 1001, _payload(500, 2)),
    ]
    packets = capgen.conversation(100, 200, segs, server_window=[0, 0, 0, 8192, 0])
    doc = _check_generated(tmp_path, "zerowin.pcap", packets)
    assert doc["connections"][0]["client_to_server"]["bytes"] == 1501


@pytest.mark.parametrize(
    "fmt", ["be.pcap", "ns.pcap", "be-ns.pcap", "be.pcapng", "le.pcapng", "v6.pcap"]
)
def test_byte_orders_and_resolutions(tmp_path, fmt):
    segs = [("c", 0, _payload(700, 3)), ("s", 0, _payload(90, 4)), ("c", 700, _payload(50, 5))]
    packets = capgen.conversation(11, 22, segs, v6=fmt.startswith("v6"))
    options = {"endian": ">" if fmt.startswith("be") else "<"}
    if "ns" in fmt:
        options["nano"] = True
    doc = _check_generated(tmp_path, f"cap-{fmt}", packets, **options)
    conn = doc["connections"][0]
    assert conn["first_ns"] == (packets[0][0] if "ns" in fmt else packets[0][0] // 1000 * 1000)
    assert conn["client_to_server"]["bytes"] == 750 and conn["server_to_client"]["bytes"] == 90


def test_segment_records_for_the_trace_model():
    from wskreplay.formats.pcap import read_frames
    from wskreplay.recorder.tcp import reassemble

    segs = [("c", 0, _payload(1000, 1)), ("s", 0, b"ok"), ("c", 1000, b"x")]
    wscale = b"\x02\x04\x05\xb4\x01\x03\x03\x07"  # MSS 1460, NOP, window scale 7
    packets = capgen.conversation(
        (1 << 32) - 10, 500, segs, server_window=[0, 100, 0], syn_options=wscale
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.pcap"
        capgen.write_pcap(path, packets, nano=True)
        result = reassemble(read_frames(path))
        (conn,) = result.connections
        assert (conn.to_server.mss, conn.to_server.wscale) == (1460, 7)
        table = conn.segment_table(result.segments, socket=3)
    rows = list(table)
    assert [r.time_ns for r in rows] == [t for t, _ in packets]
    assert [(int(r.direction), r.seq, r.length) for r in rows] == [
        (0, 0, 0),
        (1, 0, 0),
        (0, 0, 0),
        (0, 0, 1000),
        (1, 0, 2),
        (0, 1000, 1),
        (0, 1001, 0),
        (1, 2, 0),
    ]
    assert [r.ack for r in rows] == [0, 0, 0, 0, 1000, 2, 2, 1002]
    assert rows[4].window == 100 << 7 and rows[1].window == 65535
    assert {r.socket for r in rows} == {3}


def test_in_order_segment_beats_an_earlier_buffered_out_of_order_copy(tmp_path):
    """B (bytes 300..600) arrives before A (0..450) with different bytes where they overlap:
    the stream reaches 300 through A, so A's copy of 300..450 is the one delivered."""
    a, b = _payload(450, 1), bytes(range(200, 250)) * 6
    segs = [("c", 300, b), ("c", 0, a), ("c", 600, _payload(100, 3))]
    doc = _check_generated(tmp_path, "buffered.pcap", capgen.conversation(50, 60, segs))
    expected = a + b[150:] + _payload(100, 3)
    assert doc["connections"][0]["client_to_server"]["sha256"] == sha256(expected)


def test_first_data_segment_retransmitted_after_later_ones(tmp_path):
    parts = [_payload(200, i) for i in range(4)]
    segs = [("c", 200, parts[1]), ("c", 400, parts[2]), ("c", 0, parts[0]), ("c", 600, parts[3])]
    doc = _check_generated(tmp_path, "late-first.pcap", capgen.conversation(70, 80, segs))
    c2s = doc["connections"][0]["client_to_server"]
    assert c2s["gaps"] == [] and c2s["sha256"] == sha256(b"".join(parts))
