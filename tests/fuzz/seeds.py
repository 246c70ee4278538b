"""Write the seed corpora under ``tests/fuzz/corpus/`` from real inputs: the public captures
and ETW logs in ``../shared/data``, the shipped traces, and protocol frames as the replayer
sends them. Run again to refresh; the files are committed so a run needs nothing else.

    python tests/fuzz/seeds.py [HARNESS...]      # all, or only these harnesses' seeds
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from tests.fuzz.harnesses import CORPUS, HARNESSES  # noqa: E402
from wskreplay.agent import protocol  # noqa: E402
from wskreplay.formats import tracelogging as tl  # noqa: E402
from wskreplay.formats import wsk, xpress  # noqa: E402
from wskreplay.formats.etl import EtlFile  # noqa: E402
from wskreplay.generators.synth import synth_trace  # noqa: E402
from wskreplay.replayer.profile import load_profile  # noqa: E402
from wskreplay.trace import TraceReader, write_trace  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
TRACES = REPO / "traces"
CAPTURE_SEED_BYTES = 8 << 10


def _save(name: str, data: bytes) -> None:
    limit = HARNESSES[name].max_len
    data = data[:limit]
    (CORPUS / name / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def _captures() -> None:
    for path in sorted((SHARED / "pcap").iterdir()) + sorted((TRACES / "captures").iterdir()):
        data = path.read_bytes()
        name = "pcapng" if data[:4] == b"\x0a\x0d\x0d\x0a" else "pcap"
        if data[:2] == b"\x1f\x8b" and len(data) > HARNESSES[name].max_len:
            continue
        _save(name, data[:CAPTURE_SEED_BYTES])


def _etl() -> list[EtlFile]:
    logs = []
    for path in [*sorted((SHARED / "etl").glob("*.etl")), TRACES / "field.etl"]:
        log = EtlFile(path)
        logs.append(log)
        first_two = log.buffers[:2][-1]
        _save("etl", path.read_bytes()[: first_two.offset + first_two.size])
    return logs


def _xpress(logs: list[EtlFile]) -> None:
    samples = [
        b"",
        b"a",
        b"abc" * 700,
        (SHARED / "pcap").joinpath("pcapplusplus__one_http_stream_rst.pcap").read_bytes()[:4096],
    ]
    for log in logs:
        for info in log.buffers[:2]:
            if info.compressed:
                raw = bytes(log.buffer_bytes(info))[: 1 << 13]
                samples.append(raw)
    for data in samples:
        _save("xpress", struct.pack("<H", len(data)) + xpress.compress(data))
        _save("xpress-roundtrip", data)


def _tracelogging(logs: list[EtlFile]) -> None:
    """Each distinct event schema of the logs (the recorder's own events in field.etl
    among them), with the payload of its first event."""
    seen: set[bytes] = set()
    for log in logs:
        for ev in log.events():
            schema = next((x.data for x in ev.extended if x.type == tl.EXT_SCHEMA), None)
            if schema is not None and schema not in seen:
                seen.add(schema)
                _save("tracelogging", struct.pack("<H", len(schema)) + schema + ev.payload)


def _cmsghdr() -> None:
    with TraceReader(TRACES / "sample.wskt") as reader:
        blob = bytes(reader.calls().control_blob)
    if blob:
        _save("cmsghdr", blob[:512])
    for layout in (wsk.X64, wsk.X86):
        messages = [wsk.ControlMessage(0, 1, b"\x01\x02"), wsk.ControlMessage(41, 50, bytes(20))]
        _save("cmsghdr", wsk.encode_cmsgs(messages, layout))
    _save("cmsghdr", wsk.encode_sockaddr("127.0.0.1", 445))
    _save("cmsghdr", wsk.encode_sockaddr("::1", 445))


def _wskt(scratch: Path) -> None:
    for i, options in enumerate(({}, {"redact": True}, {"zstd_level": None, "block_rows": 4})):
        path = scratch / f"{i}.wskt"
        write_trace(path, synth_trace(12, 2, seed=i), **options)
        _save("wskt", path.read_bytes())
    _save("wskt", (TRACES / "field.wskt").read_bytes()[: 1 << 14])


def _agent() -> None:
    profile = load_profile().as_dict()
    profile.pop("source", None)
    frames = [
        {"op": "hello", "version": protocol.VERSION, "token": "x" * 16, "profile": profile},
        {"op": "clock", "id": 1},
        {"op": "open", "id": 2, "socket": 0, "host": "127.0.0.1", "port": 445, "nagle": False},
        {"op": "send", "id": 3, "socket": 0, "irp": 1, "flags": 0, "payload": b"x" * 40},
        {"op": "sent", "id": 3, "issue_ns": 5, "events": [["returned", 1, 259, 7],
                                                          ["completed", 1, 0, 40, 9]]},
        {"op": "event", "events": [["reset", 0, -1073741536, 11],
                                   ["violation", None, "k", "d", 1]]},
        {"op": "bye"},
    ]  # fmt: skip
    _save("agent", b"".join(protocol.encode(f) for f in frames))
    for f in frames:
        _save("agent", protocol.encode(f))


def _framed(frames: list[tuple[int, bytes]], linktypes: tuple[int, ...]) -> bytes:
    return b"".join(
        bytes([linktypes.index(lt)]) + struct.pack("<H", len(f)) + f for lt, f in frames
    )


def _decoders() -> None:
    """Frames of the shared captures (tunnels, radiotap, native 802.11) and real frames
    re-wrapped as the tests do for what they lack, a few per seed."""
    from tests import rewrap
    from tests.fuzz.harnesses import LINK_FAMILIES
    from wskreplay.formats.pcap import read_frames

    for path in sorted((SHARED / "replay").iterdir()):
        frames = read_frames(path)
        picked = [(int(frames.linktype[i]), bytes(frames.frame(i))) for i in range(len(frames))]
        for family, linktypes in LINK_FAMILIES.items():
            mine = [(lt, f[:2000]) for lt, f in picked if lt in linktypes]
            for k in range(0, min(len(mine), 24), 6):
                _save(family, _framed(mine[k : k + 6], linktypes))
    source = rewrap.ip_only(
        rewrap.ethernet_frames(str(SHARED / "pcap" / "pcapplusplus__three_http_streams.pcap"))
    )[:6]
    data = lambda e, p: rewrap.dot11_data(rewrap.llc_snap(e, p))  # noqa: E731
    wraps = {
        "ieee80211": [
            (127, lambda e, p: rewrap.radiotap(data(e, p), fcs=True)),
            (192, lambda e, p: rewrap.ppi(data(e, p))),
            (119, lambda e, p: rewrap.prism(data(e, p))),
            (163, lambda e, p: rewrap.avs(data(e, p))),
            (105, lambda e, p: rewrap.dot11_data(rewrap.amsdu([(e, p), (e, p)]), amsdu=True)),
        ],
        "other-links": [(7, rewrap.arcnet_bsd), (129, rewrap.arcnet_linux)],
        "ethernet-tunnels": [
            (1, lambda e, p: rewrap.vxlan(rewrap.inner_ethernet(e, p), port=8472)),
            (1, lambda e, p: rewrap.geneve(rewrap.inner_ethernet(e, p))),
            (1, rewrap.gtp_u),
            (1, rewrap.gre),
            (1, lambda e, p: rewrap.erspan_iii(rewrap.inner_ethernet(e, p), 1)),
            (1, lambda e, p: rewrap.pptp(p)),
            (1, rewrap.mpls),
            (1, lambda e, p: rewrap.ip_in_ip(e, p, outer6=True)),
        ],
    }
    for family, cases in wraps.items():
        for linktype, wrap in cases:
            frames = [(linktype, wrap(e, p)) for _t, e, p in source]
            _save(family, _framed(frames, LINK_FAMILIES[family]))
    pieces = [
        (1, rewrap.ethernet(0x0800, piece))
        for _t, _e, packet in source[3:5]
        for piece in rewrap.fragment_ipv4(packet)
    ]
    _save("ethernet-tunnels", _framed(pieces, (1,)))


def _pktmon_schemas() -> None:
    from wskreplay.formats import event_metadata, pktmon

    path = SHARED / "etl" / "demikernel__PktMon.etl"
    for ev in EtlFile(path).events():
        if ev.provider_guid == event_metadata.PROVIDER_GUID and ev.id == event_metadata.EVENT_INFO:
            _save("pktmon-schema", bytes(ev.payload))
    for schema in pktmon.BUILTIN.values():
        _save("pktmon-schema", event_metadata.encode_event_info(schema))


def main(names: list[str] | None = None) -> None:
    for name in names or HARNESSES:
        shutil.rmtree(CORPUS / name, ignore_errors=True)
        (CORPUS / name).mkdir(parents=True)
    if names:
        if any(n != "pktmon-schema" for n in names):
            _decoders()
        if "pktmon-schema" in names:
            _pktmon_schemas()
        return
    _captures()
    logs = _etl()
    _xpress(logs)
    _tracelogging(logs)
    _cmsghdr()
    with tempfile.TemporaryDirectory() as tmp:
        _wskt(Path(tmp))
    _agent()
    _decoders()
    _pktmon_schemas()
    for name in HARNESSES:
        files = list((CORPUS / name).iterdir())
        print(f"{name}: {len(files)} seeds, {sum(f.stat().st_size for f in files):,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:] or None)
