"""PktMon packets inside an .etl, presented as frames; exported to pcapng for Wireshark."""

from __future__ import annotations

import json
import struct
import subprocess

from wskreplay.formats import pcap
from wskreplay.formats.etl import EtlFile
from wskreplay.formats.etl_packets import PKTMON_PACKET, PKTMON_PROVIDER, etl_frames

from .conftest import SHARED_DATA, run_cli

PKTMON_ETL = SHARED_DATA / "etl" / "demikernel__PktMon.etl"


def _ip_checksum_ok(header: bytes) -> bool:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_frames_are_valid_ethernet_ipv4_with_correct_checksums():
    frames = etl_frames(str(PKTMON_ETL))
    assert len(frames) == 38
    assert frames.notes["pktmon_appearances"] == 114 and frames.notes["pktmon_drops"] == 0
    for i in range(len(frames)):
        frame = bytes(frames.frame(i))
        assert frames.linktype[i] == pcap.LINKTYPE_ETHERNET and frame[12:14] == b"\x08\x00"
        ihl = (frame[14] & 0xF) * 4
        assert frame[14] >> 4 == 4 and _ip_checksum_ok(frame[14 : 14 + ihl])
    assert list(frames.time_ns) == sorted(frames.time_ns)


def test_each_packet_is_kept_once_at_its_appearance_closest_to_the_wire():
    appearances: dict[int, list[tuple[int, int, int]]] = {}
    for ev in EtlFile(PKTMON_ETL).events():
        if ev.provider_guid == PKTMON_PROVIDER and ev.id == PKTMON_PACKET:
            group, _n, appearance, dirtag = struct.unpack_from("<QHHH", ev.payload)
            appearances.setdefault(group, []).append((appearance, ev.ts_ns, dirtag))
    expected = []
    for seen in appearances.values():
        seen.sort()
        inbound = seen[0][2] in (1, 3, 5)
        expected.append((seen[0] if inbound else seen[-1])[1])
    assert sorted(expected) == etl_frames(str(PKTMON_ETL)).time_ns.tolist()


def test_export_pcapng_is_read_by_tshark(tmp_path):
    out = tmp_path / "pktmon.pcapng"
    proc = run_cli("export", str(PKTMON_ETL), "--pcapng", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = subprocess.run(
        [
            "tshark",
            "-r",
            str(out),
            "-T",
            "fields",
            "-e",
            "frame.protocols",
            "-e",
            "frame.packet_flags_direction",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.splitlines()
    assert len(rows) == 38
    assert all(r.startswith("eth:ethertype:ip:icmp") for r in rows)
    assert {r.split("\t")[1] for r in rows} == {"0x00000001", "0x00000002"}


def test_streams_reads_an_etl():
    proc = run_cli("streams", str(PKTMON_ETL), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["packets"] == 38 and doc["tcp_packets"] == 0 and doc["complete"]


def test_ndis_fragments_are_assembled_into_frames(tmp_path):
    from wskreplay.formats.etl_packets import (
        KW_PACKET_END,
        KW_PACKET_START,
        KW_RAW_IP,
        KW_RECEIVE,
        KW_SEND,
    )
    from wskreplay.formats.etl_writer import EtlWriter

    t0 = 1_767_225_600_000_000_000
    ether = b"\x02" * 12 + b"\x08\x00" + bytes(range(100))
    raw_ip = bytes([0x45]) + bytes(59)
    path = tmp_path / "ndis.etl"
    with open(path, "w+b") as f:
        w = EtlWriter(f, start_ns=t0)
        w.ndis_fragment(t0 + 1000, ether[:40], KW_SEND | KW_PACKET_START | 0x1, trailer=bytes(16))
        w.ndis_fragment(t0 + 1100, ether[40:], KW_SEND | KW_PACKET_END | 0x1, trailer=bytes(16))
        w.ndis_fragment(t0 + 2000, raw_ip, KW_RECEIVE | KW_RAW_IP | KW_PACKET_START | KW_PACKET_END)
        w.close()
    frames = etl_frames(str(path))
    assert len(frames) == 2 and frames.notes["ndis_frames"] == 2
    assert bytes(frames.frame(0)) == ether and bytes(frames.frame(1)) == raw_ip
    assert frames.linktype.tolist() == [pcap.LINKTYPE_ETHERNET, pcap.LINKTYPE_RAW]
    assert frames.direction.tolist() == [pcap.DIRECTION_OUT, pcap.DIRECTION_IN]
    assert frames.time_ns.tolist() == [t0 + 1000, t0 + 2000]
