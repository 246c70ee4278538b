"""`wskreplay streams` (parse + TCP reassembly + sha256) against the usual Python tools and
tshark, on the same files in the same run.

    pip install dpkt python-pcapng scapy pyshark      # the peers; tshark from Debian
    python benchmarks/bench_streams.py [--packets 1000000] [--dir bench-out]

Inputs: a generated capture of >= 1,000,000 TCP packets (benchmarks/gen_capture.py: many
interleaved connections, ~1% loss retransmitted later, some reordering), and the largest
shared captures. Peers: dpkt and python-pcapng parse only (python-pcapng on the same frames
written as pcapng), scapy and pyshark on a slice (they are slow), tshark's
``-z follow,tcp,raw`` for every stream of the slice. Prints packets/s and ratios.
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_capture import generate  # noqa: E402
from timing import best_of  # noqa: E402

from wskreplay.formats import pcap  # noqa: E402
from wskreplay.recorder.tcp import reassemble, streams_summary  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data" / "pcap"
LARGEST_SHARED = [
    "suricata-verify__decode-sll2-02.pcap",
    "suricata-verify__smb2-01_smb2-peter.pcap",
    "zeek__http_1000-requests-one-dropped-response.pcap.gz",
]


def ours(path: Path) -> None:
    frames = pcap.read_frames(path)
    streams_summary(reassemble(frames))


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
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
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

    rows: list[tuple[str, str, int, float]] = []
    rows.append(
        (
            "wskreplay streams (parse+reassembly+sha256)",
            big.name,
            n,
            best_of(args.repeat, lambda: ours(big)),
        )
    )
    rows.append(
        (
            "wskreplay streams, pcapng input",
            big_ng.name,
            n,
            best_of(args.repeat, lambda: ours(big_ng)),
        )
    )
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
