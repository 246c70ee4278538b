"""`wskreplay import`: throughput and peak memory, with peers on the same inputs, same run.

    pip install -e '.[test,bench]'     # etl-parser, dpkt
    python benchmarks/bench_import.py [--dir bench-out] [--etl-calls 60000] [--packets 1000000]
                                      [--only etl|capture]

Inputs, each at two sizes 10x apart (the larger by default >= 1 GB of packets and 1M
packets):
- a synthetic field recording (`wskreplay/generators/fieldsim.py`): WskReplay.Recorder
  events plus one PktMon event per packet, XPRESS-compressed 64 KiB buffers, 16 KiB sends;
  one with PktMon's appearance at every component of the stack (1/7 the calls); and one in
  Windows 11 24H2's layout, whose appearances carry no group number and are grouped into
  packets by their bytes (1/3 the calls);
- a TCP capture for ``--infer-calls`` (`benchmarks/gen_capture.py`).

Each import runs as its own process (``/usr/bin/time``-style peak RSS from
``getrusage(RUSAGE_CHILDREN)``), as a user runs it. Peers: etl-parser parsing the records
of the small recording rewritten uncompressed (it reads no compressed buffers), and for
the captures dpkt decoding every Ethernet/IP/TCP header and ``tshark -q -z conv,tcp``
(reads every packet, tracks TCP conversations). Each recording is also imported by the
reference path (``WSKREPLAY_PURE_PYTHON=1``), and the two traces compared byte for byte.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_etl import rewrite_uncompressed  # noqa: E402
from gen_capture import generate  # noqa: E402

from tests.conftest import run_measured as measured_run  # noqa: E402
from wskreplay.generators import fieldsim  # noqa: E402


def make_recording(path: Path, calls: int, layout: str = "numbered") -> None:
    """``numbered``: one PktMon appearance a packet; ``described``: one at each component
    of an Ethernet stack, with PktMon's component and schema events, as PktMon logs when
    not told to watch the NICs alone; ``24h2``: Windows 11 24H2's packet event, with no
    group number."""
    rec = fieldsim.field_recording(seed=5, bulk_calls=calls)
    with open(path, "wb") as f:
        fieldsim.write_field_etl(
            rec, f, compress=True, appearances=1, payload_cap=128, pktmon_layout=layout
        )


def run_measured(cmd: list[str], *, reference: bool = False) -> tuple[float, int]:
    """Wall seconds and the command's own peak RSS in bytes (``cmd`` is wskreplay's argv),
    measured from a fresh parent (``tests.conftest.run_measured``)."""
    env = {**os.environ, "WSKREPLAY_PURE_PYTHON": "1" if reference else "0"}
    t = time.perf_counter()
    proc, kib = measured_run([sys.executable, "-m", "wskreplay", *cmd], env=env)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"wskreplay {' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
    return elapsed, kib * 1024


def wskreplay_import(*args: str) -> list[str]:
    return ["import", "--no-progress", *args]


def calls_in(trace: Path) -> int:
    from wskreplay.trace import TraceReader

    with TraceReader(trace) as r:
        return len(r.call_column("seq"))


def etl_parser_seconds(path: Path) -> float:
    import etl.etl as etl_parser

    t = time.perf_counter()
    parsed = etl_parser.build_from_stream(path.read_bytes())
    n = sum(1 for chunk in parsed.chunks for _ in etl_parser.ChunkParser.parse(chunk.payload))
    assert n
    return time.perf_counter() - t


def dpkt_seconds(path: Path) -> float:
    import dpkt

    t = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            ip = dpkt.ethernet.Ethernet(buf).data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                n += 1
    assert n
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", default="bench-out")
    ap.add_argument("--etl-calls", type=int, default=60_000, help="16 KiB sends, larger size")
    ap.add_argument("--packets", type=int, default=1_000_000, help="capture, larger size")
    ap.add_argument("--only", choices=("etl", "capture"), help="one of the two sections")
    args = ap.parse_args()
    out = Path(args.dir)
    out.mkdir(exist_ok=True)
    if args.only != "capture":
        bench_etl(out, args.etl_calls)
    if args.only != "etl":
        bench_capture(out, args.packets)
    print(f"(cores: {os.cpu_count()})")


def bench_etl(out: Path, etl_calls: int) -> None:

    print("== .etl recording (events + PktMon packets, compressed buffers) ==")
    rows = []
    inputs = [
        (etl_calls // 10, "numbered"),
        (etl_calls, "numbered"),
        (etl_calls // 7, "described"),
        (etl_calls // 3, "24h2"),
    ]
    for calls, layout in inputs:
        etl = out / f"field-{calls}.etl" if layout == "numbered" else out / f"{layout}-{calls}.etl"
        if not etl.exists():
            make_recording(etl, calls, layout)
        trace = out / f"field-{calls}.wskt"
        seconds, peak = run_measured(wskreplay_import(str(etl), "-o", str(trace)))
        size = etl.stat().st_size
        n = calls_in(trace)
        rows.append((etl, size, seconds, peak))
        print(
            f"{etl.name}: {size / 1e6:.0f} MB, {n} calls: {seconds:.2f} s, "
            f"{size / 1e6 / seconds:.0f} MB/s, {n / seconds:.0f} calls/s, "
            f"peak RSS {peak / 1e6:.0f} MB ({peak / size:.2f}x input)"
        )
        slow, slow_peak = run_measured(
            wskreplay_import(str(etl), "-o", str(out / "reference.wskt")), reference=True
        )
        same = (out / "reference.wskt").read_bytes() == trace.read_bytes()
        print(
            f"  reference path (WSKREPLAY_PURE_PYTHON=1), same run: {slow:.2f} s, "
            f"{size / 1e6 / slow:.0f} MB/s, peak RSS {slow_peak / 1e6:.0f} MB: "
            f"{slow / seconds:.2f}x the time; traces {'identical' if same else 'DIFFER'}"
        )
    small = rows[0][0]
    plain = out / "field-small-uncompressed.etl"
    rewrite_uncompressed(small, plain)
    ours, _ = run_measured(wskreplay_import(str(plain), "-o", str(out / "plain.wskt")))
    theirs = etl_parser_seconds(plain)
    print(
        f"{plain.name} ({plain.stat().st_size / 1e6:.0f} MB): import {ours:.1f} s; "
        f"etl-parser only parsing its records {theirs:.1f} s: import is {theirs / ours:.1f}x faster"
    )


def bench_capture(out: Path, packets_large: int) -> None:
    print("== capture, import --infer-calls ==")
    for packets in (packets_large // 10, packets_large):
        cap = out / f"capture-{packets}.pcap"
        if not cap.exists():
            generate(str(cap), packets=packets)
        trace = out / f"inferred-{packets}.wskt"
        seconds, peak = run_measured(wskreplay_import("--infer-calls", str(cap), "-o", str(trace)))
        size = cap.stat().st_size
        n = calls_in(trace)
        line = (
            f"{cap.name}: {size / 1e6:.0f} MB: {seconds:.1f} s, {packets / seconds:.0f} packets/s, "
            f"{n / seconds:.0f} calls/s ({n} calls), peak RSS {peak / 1e6:.0f} MB "
            f"({peak / size:.2f}x input)"
        )
        peers = []
        try:
            peers.append(("dpkt header decode", dpkt_seconds(cap)))
        except ImportError:
            pass
        if shutil.which("tshark"):
            t = time.perf_counter()
            subprocess.run(
                ["tshark", "-r", str(cap), "-q", "-z", "conv,tcp"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            peers.append(("tshark -z conv,tcp", time.perf_counter() - t))
        for name, t in peers:
            line += f"; {name} {t:.1f} s ({t / seconds:.1f}x import's time)"
        print(line)


if __name__ == "__main__":
    main()
