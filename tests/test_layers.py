"""Link layers, tunnels and fragments: real TCP frames re-wrapped in what the shared
captures lack, read by ``wskreplay streams`` and by tshark (the oracle); every TCP
segment's encapsulation against the protocol stack tshark dissects."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from wskreplay.formats import pcap
from wskreplay.formats.etl_packets import read_capture
from wskreplay.formats.tcpip import DecodeOptions
from wskreplay.recorder.tcp import CaptureOptions, reassemble

from . import capgen
from . import rewrap as rw
from .conftest import SHARED_DATA, run_cli
from .test_streams import assert_matches_tshark
from .tshark_oracle import frame_protocols

IPV4_SOURCE = SHARED_DATA / "pcap" / "pcapplusplus__three_http_streams.pcap"
IPV6_SOURCE = SHARED_DATA / "pcap" / "zeek__http_1000-requests-one-dropped-response.pcap.gz"


@pytest.fixture(scope="module")
def v4() -> list[tuple[int, int, bytes]]:
    return rw.ip_only(rw.ethernet_frames(str(IPV4_SOURCE)))


@pytest.fixture(scope="module")
def v6() -> list[tuple[int, int, bytes]]:
    return rw.ip_only(rw.ethernet_frames(str(IPV6_SOURCE))[:120])


def data_frame(**kw):
    return lambda e, p: rw.dot11_data(rw.llc_snap(e, p), **kw)


CASES = {
    "radiotap-fcs": (127, lambda e, p: rw.radiotap(data_frame()(e, p), fcs=True)),
    "radiotap-datapad-htc": (
        127,
        lambda e, p: rw.radiotap(data_frame(htc=True, pad=True)(e, p), pad=True),
    ),
    "radiotap-two-bitmaps": (127, lambda e, p: rw.radiotap_extended(data_frame()(e, p))),
    "80211-four-address": (105, data_frame(to_ds=True, from_ds=True)),
    "80211-non-qos-from-ds": (105, data_frame(qos=False, to_ds=False, from_ds=True)),
    "ppi-fcs": (192, lambda e, p: rw.ppi(data_frame()(e, p))),
    "prism": (119, lambda e, p: rw.prism(data_frame()(e, p))),
    "avs": (163, lambda e, p: rw.avs(data_frame()(e, p))),
    "arcnet-bsd": (7, rw.arcnet_bsd),
    "arcnet-bsd-exception": (7, lambda e, p: rw.arcnet_bsd(e, p, exception=True)),
    "arcnet-linux": (129, rw.arcnet_linux),
    "vxlan": (1, lambda e, p: rw.vxlan(rw.inner_ethernet(e, p))),
    "geneve-options": (1, lambda e, p: rw.geneve(rw.inner_ethernet(e, p))),
    "gtp-u-extension": (1, rw.gtp_u),
    "gre-key-sequence": (1, rw.gre),
    "gre-teb": (1, lambda e, p: rw.gre(0x6558, rw.inner_ethernet(e, p), key=None, seq=None)),
    "erspan-ii": (1, lambda e, p: rw.erspan_ii(rw.inner_ethernet(e, p), 1)),
    "erspan-iii": (1, lambda e, p: rw.erspan_iii(rw.inner_ethernet(e, p), 1)),
    "pptp": (1, lambda e, p: rw.pptp(p)),
    "mpls-no-vlan": (1, rw.mpls),
    "4in4": (1, lambda e, p: rw.ip_in_ip(e, p, outer6=False)),
    "4in6": (1, lambda e, p: rw.ip_in_ip(e, p, outer6=True)),
}
CASES_V6 = {
    "6in4": (1, lambda e, p: rw.ip_in_ip(e, p, outer6=False)),
    "6in6": (1, lambda e, p: rw.ip_in_ip(e, p, outer6=True)),
    "teredo": (1, lambda e, p: rw.teredo(p)),
    "radiotap-ipv6": (127, lambda e, p: rw.radiotap(data_frame()(e, p), fcs=True)),
}


def streams_doc(path: Path, *extra: str) -> dict:
    proc = run_cli("streams", str(path), "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def check_against_tshark(path: Path, *extra: str, decode_as: tuple[str, ...] = ()) -> dict:
    doc = streams_doc(path, *extra)
    assert doc["connections"], path.name
    assert doc["frames"]["undecoded"] == 0, doc["undecoded"]
    assert assert_matches_tshark(path, doc, decode_as) >= len(doc["connections"])
    return doc


@pytest.mark.parametrize("name", sorted(CASES) + sorted(CASES_V6))
def test_rewrapped_capture_matches_tshark(name, v4, v6, tmp_path):
    linktype, wrap = CASES.get(name) or CASES_V6[name]
    source = v4 if name in CASES else v6
    path = tmp_path / f"{name}.pcap"
    capgen.write_pcap(path, rw.rewrap(source, wrap), linktype=linktype)
    doc = check_against_tshark(path)
    assert_paths_match_tshark(path)
    assert doc["link_types"][0]["link_type"] == linktype


def test_vxlan_on_a_port_the_user_names(v4, tmp_path):
    path = tmp_path / "vxlan-8472.pcap"
    capgen.write_pcap(
        path, rw.rewrap(v4, lambda e, p: rw.vxlan(rw.inner_ethernet(e, p), port=8472))
    )
    plain = streams_doc(path)
    assert plain["connections"] == [] and plain["frames"]["other"] == len(v4)
    doc = check_against_tshark(
        path, "--tunnel-port", "vxlan=8472", decode_as=("udp.port==8472,vxlan",)
    )
    assert doc["connections"][0]["encapsulation"] == [
        "ethernet",
        "ipv4",
        "vxlan",
        "ethernet",
        "ipv4",
    ]


def test_amsdu_subframes_are_each_a_packet(v4, tmp_path):
    """Consecutive packets of one direction of one connection aggregated in pairs (an
    A-MSDU goes to one receiver; tshark's follow also needs one stream per frame)."""
    frames = []
    pending: tuple[int, int, bytes] | None = None
    for ts, e, p in v4:
        if pending is not None and pending[2][12:24] == p[12:24]:
            both = rw.amsdu([(pending[1], pending[2]), (e, p)])
            frames.append((pending[0], rw.radiotap(rw.dot11_data(both, amsdu=True))))
            pending = None
            continue
        if pending is not None:
            frames.append((pending[0], rw.radiotap(data_frame()(pending[1], pending[2]))))
        pending = (ts, e, p)
    if pending is not None:
        frames.append((pending[0], rw.radiotap(data_frame()(pending[1], pending[2]))))
    assert len(frames) < len(v4)
    path = tmp_path / "amsdu.pcap"
    capgen.write_pcap(path, frames, linktype=127)
    doc = check_against_tshark(path)
    assert doc["tcp_packets"] == len(v4)
    assert doc["frames"] == {"read": len(frames), "tcp": len(frames), "other": 0, "undecoded": 0}


@pytest.mark.parametrize("version", [4, 6])
def test_fragments_are_reassembled_in_any_order(version, v4, v6, tmp_path):
    """Every packet with payload split into fragments, sent last-first, with one
    fragment sent twice: tshark reassembles them too."""
    frames = []
    for k, (ts, etype, packet) in enumerate(v4 if version == 4 else v6):
        pieces = rw.fragment_ipv4(packet) if version == 4 else rw.fragment_ipv6(packet, ident=k)
        if len(pieces) > 2:
            pieces = [*reversed(pieces), pieces[-1]]
        frames += [(ts + k, rw.ethernet(etype, piece)) for k, piece in enumerate(pieces)]
    path = tmp_path / f"fragments-v{version}.pcap"
    capgen.write_pcap(path, frames)
    doc = check_against_tshark(path)
    label = f"ipv{version} (reassembled)"
    assert any(label in c["encapsulation"] for c in doc["connections"])


def test_fragment_never_completed_is_reported(v4, tmp_path):
    ts, etype, packet = max(v4, key=lambda f: len(f[2]))
    pieces = rw.fragment_ipv4(packet)
    frames = [(t, rw.ethernet(e, p)) for t, e, p in v4] + [
        (ts + k + 1, rw.ethernet(etype, piece)) for k, piece in enumerate(pieces[:-1])
    ]
    frames.sort(key=lambda f: f[0])
    path = tmp_path / "lost-fragment.pcap"
    capgen.write_pcap(path, frames)
    proc = run_cli("streams", str(path), "--json")
    doc = json.loads(proc.stdout)
    missing = len(pieces) - 1
    assert doc["undecoded"] == {"IP fragment never completed": missing}
    assert doc["frames"]["tcp"] == len(v4)
    (line,) = proc.stderr.strip().splitlines()
    assert f"{missing} frames that could carry TCP were not decoded" in line


def test_undecodable_frames_are_counted_in_terminal_json_and_stderr(v4, tmp_path):
    """Radiotap frames of three connections, with copies sent protected (encrypted) and
    frames of an unknown link type's neighbour: both counts exact everywhere."""
    frames = []
    protected = 0
    for k, (ts, e, p) in enumerate(v4):
        frames.append((ts, rw.radiotap(data_frame()(e, p), fcs=True)))
        if k % 3 == 0:
            secret = bytes((b * 7 + 3) & 0xFF for b in rw.llc_snap(e, p))
            frames.append((ts + 1, rw.radiotap(rw.dot11_data(secret, protected=True), fcs=True)))
            protected += 1
    path = tmp_path / "mixed.pcap"
    capgen.write_pcap(path, frames, linktype=127)
    doc = check_against_tshark_allowing_undecoded(path)
    assert doc["frames"] == {
        "read": len(frames),
        "tcp": len(v4),
        "other": 0,
        "undecoded": protected,
    }
    assert doc["undecoded"] == {"encrypted 802.11 data": protected}
    (row,) = doc["link_types"]
    assert row["link_type"] == 127 and row["undecoded"] == {"encrypted 802.11 data": protected}
    proc = run_cli("streams", str(path))
    assert proc.returncode == 0
    assert f"not decoded: {protected} frames: encrypted 802.11 data" in proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"wskreplay: warning: {path}: {protected} frames")
    assert f"{protected} encrypted 802.11 data" in line


def check_against_tshark_allowing_undecoded(path: Path) -> dict:
    doc = json.loads(run_cli("streams", str(path), "--json").stdout)
    assert_matches_tshark(path, doc)
    return doc


def test_unknown_link_type_is_named(tmp_path):
    path = tmp_path / "unknown.pcap"
    capgen.write_pcap(path, [(1_000, b"\x00" * 60), (2_000, b"\x00" * 60)], linktype=147)
    proc = run_cli("streams", str(path), "--json")
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    assert doc["undecoded"] == {"unknown link type 147": 2}
    assert "2 unknown link type 147" in proc.stderr
    proc = run_cli("import", str(path), "--infer-calls", "-o", str(tmp_path / "t.wskt"))
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert "link type 147" in line and "2 unknown link type 147" in line
    assert "no TCP connection in the capture" not in line


def test_import_of_a_capture_with_only_encrypted_wifi_names_the_link_type(v4, tmp_path):
    frames = [
        (ts, rw.radiotap(rw.dot11_data(bytes(len(p) + 8), protected=True))) for ts, _e, p in v4
    ]
    path = tmp_path / "wpa.pcap"
    capgen.write_pcap(path, frames, linktype=127)
    proc = run_cli("import", str(path), "--infer-calls", "-o", str(tmp_path / "t.wskt"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert str(path) in line
    assert "802.11 with radiotap header (link type 127)" in line
    assert f"{len(v4)} encrypted 802.11 data" in line


def test_import_warns_but_keeps_what_it_decoded(v4, tmp_path):
    frames = [(ts, rw.ethernet(e, p)) for ts, e, p in v4]
    frames.append((frames[-1][0] + 1, rw.ethernet(0x88E5, b"\x2c" + bytes(40))))
    path = tmp_path / "macsec.pcap"
    capgen.write_pcap(path, frames)
    out = tmp_path / "t.wskt"
    proc = run_cli("import", str(path), "--infer-calls", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "1 frames that could carry TCP were not decoded: 1 encrypted MACsec" in proc.stderr
    assert "1 not decoded; 1 encrypted MACsec" in proc.stdout
    assert out.exists()


def test_bad_tunnel_port_is_one_line(tmp_path):
    for bad in ("vxlan", "nvgre=4789", "vxlan=0", "vxlan=port"):
        proc = run_cli("streams", str(IPV4_SOURCE), "--tunnel-port", bad)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert "--tunnel-port" in line


TSHARK_LAYERS = {
    "eth": "ethernet",
    "ip": "ipv4",
    "ipv6": "ipv6",
    "vlan": "vlan",
    "gre": "gre",
    "erspan": "erspan",
    "wlan": "802.11",
    "radiotap": "radiotap",
    "ppi": "ppi",
    "prism": "prism",
    "wlancap": "avs",
    "arcnet": "arcnet",
    "mpls": "mpls",
    "vxlan": "vxlan",
    "geneve": "geneve",
    "gtp": "gtp-u",
    "teredo": "teredo",
    "pppoes": "pppoe",
    "sll": "linux-sll",
    "null": "loopback",
}


def _ours(path: tuple[str, ...]) -> list[str]:
    names = [label.split(" ")[0] for label in path if label != "ppp"]
    return [n for k, n in enumerate(names) if not (n == "mpls" and k and names[k - 1] == "mpls")]


def _theirs(stack: list[str]) -> list[str]:
    until = stack.index("tcp") if "tcp" in stack else len(stack)
    return [TSHARK_LAYERS[p] for p in stack[:until] if p in TSHARK_LAYERS]


def assert_paths_match_tshark(path: Path, decode_as: tuple[str, ...] = (), **options) -> int:
    """Each TCP segment's encapsulation, layer by layer, is the stack tshark dissects."""
    frames = read_capture(str(path))
    result = reassemble(frames, CaptureOptions(decode=DecodeOptions(**options)))
    stacks = frame_protocols(str(path), decode_as)
    paths = result.report.paths.paths
    checked = 0
    for frame, p in zip(result.segments.frame.tolist(), result.segments.path.tolist(), strict=True):
        assert _ours(paths[p]) == _theirs(stacks[frame]), (path.name, frame, paths[p])
        checked += 1
    return checked


TUNNELLED = [
    p for p in sorted((SHARED_DATA / "replay").glob("*")) if "tunnels" in p.name or "mpls" in p.name
] + [
    SHARED_DATA / "replay" / "zeek__erspan.pcap",
    SHARED_DATA / "replay" / "zeek__pppoe-over-qinq.pcap",
]


@pytest.mark.parametrize("path", TUNNELLED, ids=[p.name for p in TUNNELLED])
def test_shared_tunnel_paths_match_tshark(path):
    assert assert_paths_match_tshark(path) > 0


def test_pcapng_fcs_length_is_honoured(v4, tmp_path):
    """An 802.11 interface whose pcapng if_fcslen says 4: the FCS is not payload."""
    path = tmp_path / "fcslen.pcapng"
    frames = [(ts, rw.with_fcs(data_frame()(e, p))) for ts, e, p in v4]
    with open(path, "wb") as f:
        w = pcap.PcapngWriter(f)
        body = struct.pack("<HHI", 105, 0, 0) + struct.pack("<HHB3x", 13, 1, 4) + b"\0\0\0\0"
        w._block(pcap.PCAPNG_IDB, body)
        w._ifaces[105] = 0
        for ts, frame in frames:
            w.packet(ts, 105, frame)
    doc = check_against_tshark(path)
    assert doc["frames"]["tcp"] == len(v4)


@pytest.mark.parametrize(
    "name",
    [
        "replay/zeek__tunnels_gtp_gtp1_gn_normal_incl_fragmentation.pcap",
        "replay/tcpdump__bigtcp-ipv4.pcap",
        "replay/zeek__dce-rpc_mapi.pcap",
        "replay/zeek__tunnels_Teredo.pcap",
    ],
)
def test_decoding_in_chunks_changes_nothing(name):
    """Chunks end by frame count or by bytes of capture (jumbo frames); a datagram whose
    fragments straddle chunks, a tunnel, a long capture: the same segments and report."""
    from dataclasses import fields

    from wskreplay.formats.tcpip import decode

    frames = read_capture(str(SHARED_DATA / name))
    whole = decode(frames, chunk=len(frames) + 1, chunk_bytes=1 << 62)
    for rows, span in ((1, 1 << 62), (7, 1 << 62), (1 << 17, 3000), (5, 1)):
        part = decode(frames, chunk=rows, chunk_bytes=span)
        for f in fields(whole.segments):
            assert (
                getattr(part.segments, f.name).tolist() == getattr(whole.segments, f.name).tolist()
            )
        assert part.report.as_dict() == whole.report.as_dict()
