"""PktMon recordings: one frame per packet on every build's numbering, at the appearance
nearest the wire as the file's own component descriptions say, event layouts from the
file's EventMetadata; exported pcapng read back by tshark."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

from wskreplay.formats import event_metadata, pcap, pktmon
from wskreplay.formats.etl_packets import etl_frames
from wskreplay.formats.etl_writer import EtlWriter
from wskreplay.formats.tcpip import build_tcp_frame
from wskreplay.generators import fieldsim

from .conftest import SHARED_DATA, assert_one_line_error, run_cli

PKTMON_FILES = [SHARED_DATA / "etl" / "demikernel__PktMon.etl"]
START = fieldsim.START_NS


@pytest.fixture(scope="module")
def recording() -> fieldsim.FieldRecording:
    return fieldsim.field_recording(seed=3, bulk_calls=20)


def write(rec: fieldsim.FieldRecording, path: Path, layout: str) -> Path:
    with open(path, "wb") as f:
        fieldsim.write_field_etl(rec, f, pktmon_layout=layout)
    return path


def exported(etl: Path, tmp_path: Path) -> Path:
    out = tmp_path / (etl.stem + ".pcapng")
    proc = run_cli("export", str(etl), "--pcapng", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def tshark_frames(path: Path) -> list[tuple[float, str, str, str]]:
    """(time, TCP stream, sequence number, data) of every frame, as tshark reads them."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "tcp.stream",
            "-e",
            "tcp.seq_raw",
            "-e",
            "frame.len",
            "-e",
            "tcp.len",
            "-e",
            "ip.id",
            "-e",
            "ipv6.plen",
            "-e",
            "tcp.flags",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(line.split("\t")) for line in out.splitlines()]


def assert_one_frame_per_packet(pcapng: Path) -> int:
    """No two frames with the same network-layer bytes within 100 us, unless they are
    TCP sent twice (same sequence number and flags: a retransmission shows as such)."""
    frames = pcap.read_frames(pcapng)
    seen: dict[bytes, int] = {}
    repeats = 0
    for i in range(len(frames)):
        content = pktmon.network_bytes(frames.frame(i), int(frames.linktype[i]))
        t = int(frames.time_ns[i])
        if content in seen and t - seen[content] < 100_000:
            repeats += 1
        seen[content] = t
    return repeats


@pytest.mark.parametrize("layout", fieldsim.PKTMON_LAYOUTS)
def test_fieldsim_layouts_give_one_frame_per_packet_at_the_wire(layout, recording, tmp_path):
    etl = write(recording, tmp_path / f"{layout}.etl", layout)
    pcapng = exported(etl, tmp_path)
    frames = pcap.read_frames(pcapng)
    assert len(frames) == len(recording.packets)
    assert assert_one_frame_per_packet(pcapng) == 0
    wire = sorted(p.time_ns for p in recording.packets)
    assert frames.time_ns.tolist() == wire
    assert len(tshark_frames(pcapng)) == len(recording.packets)
    from_etl = json.loads(run_cli("streams", str(etl), "--json").stdout)
    from_pcapng = json.loads(run_cli("streams", str(pcapng), "--json").stdout)
    assert from_etl["connections"] == from_pcapng["connections"]
    assert from_etl["frames"] == from_pcapng["frames"]
    if layout == "24h2":
        linktypes = set(frames.linktype.tolist())
        assert linktypes == {pcap.LINKTYPE_ETHERNET, pktmon.LINKTYPE_IEEE802_11}
        assert ["802.11", "ipv6"] in [c["encapsulation"] for c in from_etl["connections"]]


def test_every_layout_imports_to_the_same_trace(recording, tmp_path):
    infos = []
    for layout in fieldsim.PKTMON_LAYOUTS:
        etl = write(recording, tmp_path / f"{layout}.etl", layout)
        out = tmp_path / f"{layout}.wskt"
        proc = run_cli("import", str(etl), "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        info = json.loads(run_cli("info", str(out), "--json").stdout)
        info["metadata"].pop("sources")
        infos.append({k: v for k, v in info.items() if k not in ("file", "bytes")})
    assert infos[0] == infos[1] == infos[2]


def test_a_retransmission_stays_two_frames(recording, tmp_path):
    rec = fieldsim.field_recording(seed=3, bulk_calls=20)
    data = [p for p in rec.packets if p.outbound and len(p.frame) > 200]
    again = fieldsim.Packet(data[3].time_ns + 60_000, data[3].frame, True)
    rec.packets = sorted([*rec.packets, again], key=lambda p: p.time_ns)
    for layout in fieldsim.PKTMON_LAYOUTS:
        pcapng = exported(write(rec, tmp_path / f"{layout}.etl", layout), tmp_path)
        assert len(pcap.read_frames(pcapng)) == len(rec.packets)
        assert assert_one_frame_per_packet(pcapng) == 1
        analysis = (
            subprocess.run(
                ["tshark", "-r", str(pcapng), "-Y", "tcp.analysis.retransmission"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
        assert len(analysis) == 1


@pytest.mark.parametrize("path", PKTMON_FILES, ids=[p.name for p in PKTMON_FILES])
def test_shared_pktmon_recordings(path, tmp_path):
    pcapng = exported(path, tmp_path)
    assert assert_one_frame_per_packet(pcapng) == 0
    frames = etl_frames(str(path))
    assert frames.notes["pktmon_appearances"] > len(frames)
    assert len(tshark_frames(pcapng)) == len(frames)
    from_etl = json.loads(run_cli("streams", str(path), "--json").stdout)
    from_pcapng = json.loads(run_cli("streams", str(pcapng), "--json").stdout)
    assert from_etl["connections"] == from_pcapng["connections"]
    assert from_etl["frames"] == from_pcapng["frames"]


def test_the_shared_recording_describes_its_own_layouts():
    """Its EventMetadata schemas of events 160, 20, 30 and 90 are the built-in ones."""
    from wskreplay.formats.etl import EtlFile

    path = str(PKTMON_FILES[0])
    found = {}
    for ev in EtlFile(path).events():
        if ev.provider_guid == event_metadata.PROVIDER_GUID and ev.id == event_metadata.EVENT_INFO:
            schema = event_metadata.decode_event_info(ev.payload, path, ev.record_offset)
            found[(schema.event_id, schema.version)] = schema
    for key, builtin in pktmon.BUILTIN.items():
        if key in found:
            names = [(p.name, p.in_type, p.size) for p in found[key].properties]
            assert names == [(p.name, p.in_type, p.size) for p in builtin.properties]
    assert (160, 0) in found and (20, 0) in found and (90, 0) in found


def _component_file(path: Path, *, described: bool) -> None:
    """One outbound packet logged at a miniport, then at a filter 5 us later (a filter
    that logs on completion): arrival order alone would take the filter's copy."""
    frame = build_tcp_frame("192.0.2.1", 1000, "192.0.2.2", 80, 1, 1, 0x18, b"x" * 40)
    with open(path, "wb") as f:
        w = EtlWriter(f, start_ns=START)
        if described:
            for key in sorted(pktmon.BUILTIN):
                w.event_schema(START + 1, pktmon.BUILTIN[key])
        w.pktmon_packet(START + 1000, 7, frame, appearance=1, dirtag=4, component=3, edge=1)
        w.pktmon_packet(START + 6000, 7, frame, appearance=2, dirtag=4, component=9, edge=2)
        if described:
            w.pktmon_component(START + 9000, 3, 2, "nic.sys", "NIC", {1: 9}, {1: "Upper"})
            w.pktmon_component(
                START + 9000, 9, 3, "flt.sys", "Filter", {1: 20, 2: 9}, {1: "Upper", 2: "Lower"}
            )
        w.close()


def test_components_choose_the_wire_side_copy(tmp_path):
    described, bare = tmp_path / "described.etl", tmp_path / "bare.etl"
    _component_file(described, described=True)
    _component_file(bare, described=False)
    assert etl_frames(str(described)).time_ns.tolist() == [START + 1000]
    assert etl_frames(str(bare)).time_ns.tolist() == [START + 6000]


def _versioned_file(path: Path, schema: event_metadata.EventSchema | None, extra: bytes) -> None:
    """Event 160 version 1 with 4 more bytes before the frame (a later build's layout)."""
    frame = build_tcp_frame("192.0.2.1", 1000, "192.0.2.2", 80, 1, 1, 0x18, b"y" * 30)
    fixed = struct.pack("<QHHHHHHHIIHH", 5, 1, 1, 4, 1, 3, 1, 0, 0, 0, len(frame), len(frame))
    with open(path, "wb") as f:
        w = EtlWriter(f, start_ns=START)
        if schema is not None:
            w.event_schema(START + 1, schema)
        w.event(
            START + 100,
            pktmon.PROVIDER,
            pktmon.PACKET,
            version=1,
            payload=fixed + extra + frame,
            keyword=0x10,
        )
        w.close()


LATER_BUILD = pktmon.packet_schema(fields=(*pktmon.PACKET_FIELDS, ("Flags", 8)), version=1)


def test_a_layout_the_file_describes_is_read(tmp_path):
    path = tmp_path / "v1.etl"
    _versioned_file(path, LATER_BUILD, b"\xff\xff\xff\xff")
    frames = etl_frames(str(path))
    assert len(frames) == 1 and bytes(frames.frame(0)).endswith(b"y" * 30)


def test_an_undescribed_later_version_is_refused(tmp_path):
    path = tmp_path / "v1-bare.etl"
    _versioned_file(path, None, b"\xff\xff\xff\xff")
    proc = run_cli("streams", str(path))
    assert_one_line_error(proc, str(path))
    assert "PktMon event 160 version 1" in proc.stderr and "no layout" in proc.stderr


def test_a_layout_the_reader_cannot_honour_is_refused(tmp_path):
    schema = event_metadata.EventSchema(
        pktmon.PROVIDER,
        pktmon.PACKET,
        1,
        (
            event_metadata.Property("PktGroupId", 10),
            event_metadata.Property("Comment", event_metadata.TDH_INTYPE_UNICODESTRING),
            *LATER_BUILD.properties[1:],
        ),
    )
    path = tmp_path / "v1-string.etl"
    _versioned_file(path, schema, b"\xff\xff\xff\xff")
    proc = run_cli("streams", str(path))
    assert_one_line_error(proc, str(path))
    assert "PktMon event 160 version 1" in proc.stderr and "Comment" in proc.stderr


def test_a_schema_after_the_events_is_still_used(tmp_path):
    """Version 0 as a later build logs it (4 more bytes), described only after the packet:
    the built-in reading is dropped and the file read again with its own layout."""
    changed = pktmon.packet_schema(fields=(*pktmon.PACKET_FIELDS, ("Flags", 8)))
    frame = build_tcp_frame("192.0.2.1", 1000, "192.0.2.2", 80, 1, 1, 0x18, b"z" * 30)
    fixed = struct.pack("<QHHHHHHHIIHH", 5, 1, 1, 4, 1, 3, 1, 0, 0, 0, len(frame), len(frame))
    path = tmp_path / "late.etl"
    with open(path, "wb") as f:
        w = EtlWriter(f, start_ns=START)
        w.event(START + 100, pktmon.PROVIDER, 160, payload=fixed + b"\0" * 4 + frame, keyword=16)
        w.event_schema(START + 200, changed)
        w.close()
    frames = etl_frames(str(path))
    assert len(frames) == 1 and bytes(frames.frame(0)) == frame
