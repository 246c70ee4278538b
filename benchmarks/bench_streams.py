"""`wskreplay streams` (parse + TCP reassembly + sha256) against the usual Python tools and
tshark, on the same files in the same run.

    pip install dpkt python-pcapng scapy pyshark      # the peers; tshark from Debian
    python benchmarks/bench_streams.py [--packets 1000000] [--dir bench-out]
        [--links] [--baseline REV]
    python benchmarks/bench_streams.py --memory 10800000 [--baseline REV] [--dir bench-out]

Inputs: a generated capture of >= 1,000,000 TCP packets (benchmarks/gen_capture.py: many
interleaved connections, ~1% loss retransmitted later, some reordering), and the largest
shared captures. Peers: dpkt and python-pcapng parse only (python-pcapng on the same frames
written as pcapng), scapy and pyshark on a slice (they are slow), tshark's
``-z follow,tcp,raw`` for every stream of the slice. Prints packets/s and ratios.

``--links``: the generated capture's frames re-wrapped in 802.11 with radiotap, in VXLAN
and in an MPLS label stack (same IP packets, 1M frames each), each read by ``streams``
and by dpkt decoding down to TCP; ratios against the Ethernet path and against dpkt.
``--baseline REV``: the Ethernet path of the package at git revision REV (checked out in a
temporary worktree) timed in the same run, so a change's cost is seen on the same machine.

``--memory PACKETS``: a generated capture of PACKETS packets (10,800,000 are about 10 GB),
as pcap and as pcapng; ``wskreplay streams --json`` run on each as a whole process, its
seconds and peak RSS printed, with dpkt's parse-only loop on the pcap (and REV's
``streams`` with ``--baseline``) in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_capture import generate  # noqa: E402
from timing import best_of  # noqa: E402

from wskreplay.formats import pcap  # noqa: E402
from wskreplay.recorder.capture_streams import streams_of_file  # noqa: E402
from wskreplay.recorder.tcp import CaptureOptions, reassemble  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data" / "pcap"
LARGEST_SHARED = [
    "suricata-verify__decode-sll2-02.pcap",
    "suricata-verify__smb2-01_smb2-peter.pcap",
    "zeek__http_1000-requests-one-dropped-response.pcap.gz",
]


def ours(path: Path) -> None:
    streams_of_file(str(path), CaptureOptions())


def dpkt_parse(path: Path) -> int:
    import dpkt

    n = 0
    opener = open
    if path.suffix == ".gz":
        import gzip

        opener = gzip.open
    with opener(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        link = reader.datalink()
        decode = {1: dpkt.ethernet.Ethernet, 113: dpkt.sll.SLL, 276: dpkt.sll2.SLL2}[link]
        for _ts, buf in reader:
            frame = decode(buf)
            ip = frame.data
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) and isinstance(ip.data, dpkt.tcp.TCP):
                n += 1
    return n


def pcapng_parse(path: Path) -> int:
    from pcapng import FileScanner
    from pcapng.blocks import EnhancedPacket

    n = 0
    with open(path, "rb") as f:
        for block in FileScanner(f):
            if isinstance(block, EnhancedPacket):
                _ = block.packet_data
                n += 1
    return n


def scapy_parse(path: Path) -> int:
    from scapy.all import TCP, PcapReader

    n = 0
    with PcapReader(str(path)) as reader:
        for pkt in reader:
            if TCP in pkt:
                n += 1
    return n


def pyshark_parse(path: Path) -> int:
    import pyshark

    cap = pyshark.FileCapture(str(path), keep_packets=False)
    n = 0
    for pkt in cap:
        if "TCP" in pkt:
            n += 1
    cap.close()
    return n


def tshark_follow_all(path: Path, streams: int) -> None:
    args = ["tshark", "-r", str(path), "-q"]
    for i in range(streams):
        args += ["-z", f"follow,tcp,raw,{i}"]
    subprocess.run(args, check=True, capture_output=True)


def write_slice(frames: pcap.Frames, count: int, path: Path) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, int(frames.linktype[0])))
        for i in range(min(count, len(frames))):
            data = frames.frame(i)
            sec, ns = divmod(int(frames.time_ns[i]), 10**9)
            f.write(struct.pack("<IIII", sec, ns, len(data), int(frames.origlen[i])))
            f.write(data)


RADIOTAP = struct.pack("<BBHI", 0, 0, 8, 0)
DOT11 = b"\x88\x02" + bytes(22) + b"\x00\x00"
LLC_SNAP = b"\xaa\xaa\x03\x00\x00\x00"
OUTER = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
MPLS_HEAD = (
    bytes.fromhex("020000000002020000000001")
    + b"\x88\x47"
    + struct.pack("!II", 100 << 12 | 64, 200 << 12 | 0x100 | 64)
)


def _radiotap(frame: bytes) -> bytes:
    return RADIOTAP + DOT11 + LLC_SNAP + frame[12:14] + frame[14:]


def _vxlan(frame: bytes) -> bytes:
    udp_len = 8 + 8 + len(frame)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0, 64, 17, 0,
                     b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02")  # fmt: skip
    return OUTER + ip + struct.pack("!HHHH", 40000, 4789, udp_len, 0) + b"\x08" + bytes(7) + frame


def _mpls(frame: bytes) -> bytes:
    return MPLS_HEAD + frame[14:]


WRAPS = {"radiotap": (127, _radiotap), "vxlan": (1, _vxlan), "mpls": (1, _mpls)}


def rewrapped(big: Path, name: str, folder: Path) -> Path:
    """``big``'s frames re-wrapped as ``name``: one pcap, written once."""
    out = folder / f"{big.stem}-{name}.pcap"
    if out.exists():
        return out
    linktype, wrap = WRAPS[name]
    frames = pcap.read_frames(big)
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))
        for i in range(len(frames)):
            data = wrap(bytes(frames.frame(i)))
            sec, ns = divmod(int(frames.time_ns[i]), 10**9)
            f.write(struct.pack("<IIII", sec, ns, len(data), len(data)) + data)
    return out


def dpkt_tcp(path: Path, name: str) -> int:
    """dpkt decoding each frame down to its TCP header, the way its users do for each
    encapsulation (dpkt 1.9 has no VXLAN class: the inner frame is parsed by hand)."""
    import dpkt

    n = 0
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            if name == "radiotap":
                llc = dpkt.radiotap.Radiotap(buf).data.data
                ip = llc.data if isinstance(llc, dpkt.llc.LLC) else None
            elif name == "vxlan":
                outer = dpkt.ethernet.Ethernet(buf).data
                ip = dpkt.ethernet.Ethernet(outer.data.data[8:]).data
            else:
                ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) and isinstance(ip.data, dpkt.tcp.TCP):
                n += 1
    return n


def baseline_seconds(rev: str, path: Path, repeat: int) -> float:
    """The Ethernet path of revision ``rev`` on ``path``, best of ``repeat``, timed inside
    a process that imports that revision's package, with its C extensions."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = _baseline_tree(rev, Path(tmp))
        try:
            code = (
                "import sys, time\n"
                "from wskreplay.formats import pcap\n"
                "from wskreplay.recorder.tcp import reassemble, streams_summary\n"
                "times = []\n"
                "for _ in range(int(sys.argv[2])):\n"
                "    t = time.perf_counter()\n"
                "    streams_summary(reassemble(pcap.read_frames(sys.argv[1])))\n"
                "    times.append(time.perf_counter() - t)\n"
                "print(min(times))\n"
            )
            out = subprocess.run(
                [sys.executable, "-c", code, str(path), str(repeat)],
                check=True, capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tmp,
            )  # fmt: skip
            return float(out.stdout.strip())
        finally:
            _remove_tree(tree)


def _baseline_tree(rev: str, tmp: Path) -> Path:
    """Revision ``rev`` checked out under ``tmp``, its C accelerators built in place (the
    variable skips only the emulator's mypyc build, which ``streams`` does not use)."""
    tree = tmp / "baseline"
    subprocess.run(["git", "-C", str(HERE.parent), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                   check=True, capture_output=True, cwd=tree,
                   env={**os.environ, "WSKREPLAY_PURE_PYTHON": "1"})  # fmt: skip
    return tree


def _remove_tree(tree: Path) -> None:
    subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", str(tree)],
                   capture_output=True)  # fmt: skip


def measured(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of ``cmd`` as a whole process, under a fresh parent so
    that the peak read is this run's alone."""
    parent = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", parent, *cmd], check=True, text=True,
                         capture_output=True, env=env, cwd=cwd)  # fmt: skip
    seconds, kib = out.stdout.split()
    return float(seconds), int(kib) * 1024


def memory(packets: int, folder: Path, baseline: str | None) -> None:
    big = folder / f"generated-{packets}.pcap"
    if not big.exists():
        generate(str(big), packets)
    big_ng = folder / f"generated-{packets}.pcapng"
    if not big_ng.exists():
        pcap.write_pcapng(big_ng, pcap.read_frames(big))
    streams = [sys.executable, "-m", "wskreplay", "streams", "--json"]
    dpkt_loop = (
        "import sys; sys.path.insert(0, sys.argv[2]); from bench_streams import dpkt_parse; "
        "from pathlib import Path; dpkt_parse(Path(sys.argv[1]))"
    )
    runs = [
        ("wskreplay streams --json", big, measured([*streams, str(big)])),
        ("wskreplay streams --json", big_ng, measured([*streams, str(big_ng)])),
        (
            "dpkt (parse only)",
            big,
            measured([sys.executable, "-c", dpkt_loop, str(big), str(HERE)]),
        ),
    ]
    if baseline:
        with tempfile.TemporaryDirectory() as tmp:
            tree = _baseline_tree(baseline, Path(tmp))
            env = {**os.environ, "PYTHONPATH": str(tree)}
            try:
                for path in (big, big_ng):
                    runs.append(
                        (
                            f"{baseline} streams --json",
                            path,
                            measured([*streams, str(path)], env, Path(tmp)),
                        )
                    )
            finally:
                _remove_tree(tree)
    print(f"\n{'tool':32} {'input':34} {'GB':>6} {'seconds':>8} {'peak RSS MB':>12}")
    for tool, path, (seconds, peak) in runs:
        size = path.stat().st_size / 1e9
        print(f"{tool:32} {path.name:34} {size:6.2f} {seconds:8.2f} {peak / 1e6:12,.0f}")


def links(big: Path, folder: Path, repeat: int, ethernet_pps: float, n: int) -> None:
    head = ("encapsulation", "packets", "wskreplay pps", "vs Ethernet", "dpkt pps", "x dpkt")
    print(f"\n{head[0]:14} {head[1]:>9} {head[2]:>14} {head[3]:>12} {head[4]:>10} {head[5]:>7}")
    for name in WRAPS:
        path = rewrapped(big, name, folder)
        ours_s = best_of(repeat, lambda p=path: ours(p))
        dpkt_s = best_of(1, lambda p=path, k=name: dpkt_tcp(p, k))
        pps, dpkt_pps = n / ours_s, n / dpkt_s
        print(f"{name:14} {n:9d} {pps:14,.0f} {pps / ethernet_pps:11.2f}x "
              f"{dpkt_pps:10,.0f} {pps / dpkt_pps:6.1f}x")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument(
        "--slice", type=int, default=10_000, help="packets given to scapy, pyshark, tshark"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("bench-out"))
    ap.add_argument("--links", action="store_true", help="also the re-wrapped captures")
    ap.add_argument("--baseline", metavar="REV", help="git revision to time the Ethernet path of")
    ap.add_argument("--only-links", action="store_true", help="skip the peers of the main table")
    ap.add_argument("--memory", type=int, metavar="PACKETS", help="peak RSS, whole process")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.memory:
        memory(args.memory, args.dir, args.baseline)
        return
    big = args.dir / f"generated-{args.packets}.pcap"
    if not big.exists():
        generate(str(big), args.packets)
    frames = pcap.read_frames(big)
    n = len(frames)
    big_ng = args.dir / f"generated-{args.packets}.pcapng"
    if not big_ng.exists():
        pcap.write_pcapng(big_ng, frames)
    small = args.dir / f"slice-{args.slice}.pcap"
    write_slice(frames, args.slice, small)
    small_streams = len(reassemble(pcap.read_frames(small)).connections)
    del frames

    ethernet_s = best_of(args.repeat, lambda: ours(big))
    if args.baseline:
        before = baseline_seconds(args.baseline, big, args.repeat)
        print(
            f"Ethernet path, {n} packets: this tree {n / ethernet_s:,.0f} packets/s, "
            f"{args.baseline} {n / before:,.0f} packets/s ({before / ethernet_s:.2f}x)"
        )
    if args.links or args.only_links:
        links(big, args.dir, args.repeat, n / ethernet_s, n)
    if args.only_links:
        return
    rows: list[tuple[str, str, int, float]] = []
    rows.append(("wskreplay streams (parse+reassembly+sha256)", big.name, n, ethernet_s))
    rows.append(
        (
            "wskreplay streams, pcapng input",
            big_ng.name,
            n,
            best_of(args.repeat, lambda: ours(big_ng)),
        )
    )
    os.environ["WSKREPLAY_PURE_PYTHON"] = "1"
    rows.append(
        (
            "wskreplay streams, pcapng input, reference walk",
            big_ng.name,
            n,
            best_of(args.repeat, lambda: ours(big_ng)),
        )
    )
    del os.environ["WSKREPLAY_PURE_PYTHON"]
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "wskreplay", "streams", str(big), "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rows.append(("wskreplay streams --json (CLI, one run)", big.name, n, time.perf_counter() - t))
    rows.append(("dpkt (parse only)", big.name, n, best_of(1, lambda: dpkt_parse(big))))
    rows.append(
        ("python-pcapng (parse only)", big_ng.name, n, best_of(1, lambda: pcapng_parse(big_ng)))
    )
    m = min(args.slice, n)
    rows.append(("wskreplay streams", small.name, m, best_of(args.repeat, lambda: ours(small))))
    rows.append(("scapy (parse only)", small.name, m, best_of(1, lambda: scapy_parse(small))))
    rows.append(("pyshark (parse only)", small.name, m, best_of(1, lambda: pyshark_parse(small))))
    if shutil.which("tshark"):
        rows.append(
            (
                f"tshark -z follow x{small_streams} streams",
                small.name,
                m,
                best_of(1, lambda: tshark_follow_all(small, small_streams)),
            )
        )
    for name in LARGEST_SHARED:
        path = SHARED / name
        count = len(pcap.read_frames(path))
        rows.append(
            ("wskreplay streams", name, count, best_of(args.repeat, lambda p=path: ours(p)))
        )
        rows.append(
            ("dpkt (parse only)", name, count, best_of(args.repeat, lambda p=path: dpkt_parse(p)))
        )

    head = ("tool", "input", "packets", "seconds", "packets/s", "wskreplay x")
    print(f"\n{head[0]:46} {head[1]:52} {head[2]:>9} {head[3]:>8} {head[4]:>11} {head[5]:>11}")
    ref: dict[str, float] = {}
    for tool, name, count, secs in rows:
        pps = count / secs
        if tool.startswith("wskreplay streams") and name not in ref:
            ref[name] = pps
        base = ref.get(name) or ref.get(big.name)
        print(f"{tool:46} {name[:52]:52} {count:9d} {secs:8.3f} {pps:11,.0f} {base / pps:10.1f}x")


if __name__ == "__main__":
    main()
