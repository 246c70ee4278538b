"""ETL reading: wskreplay against etl-parser (and dissect.etl if installed), same files, same run.

    pip install -e '.[test]'       # etl-parser and dissect.util come with the test extra
    python benchmarks/bench_etl.py [--events 300000] [--dir bench-out]

Inputs: perfview's net.4.5.2.x64 sample (relogged, XPRESS-compressed buffers); the same
records rewritten uncompressed by wskreplay's writer; and a generated log of TraceLogging
send events and PktMon packets, compressed and not. Measured: records/s and MB/s of file
for ``events --summary`` (counts per provider and id), for a full decode (every event
built, TraceLogging fields decoded), for etl-parser's record parser on the uncompressed
files, and XPRESS decompression MB/s of output (C accelerator and pure Python).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timing import best_of  # noqa: E402

from wskreplay.cli.etwview import _decoded, etl_summary  # noqa: E402
from wskreplay.formats import xpress  # noqa: E402
from wskreplay.formats.etl import BUFFER_HEADER_SIZE, EtlFile, filetime_to_ns  # noqa: E402
from wskreplay.formats.etl_writer import EtlWriter  # noqa: E402

SHARED = HERE.parent.parent / "shared" / "data" / "etl"
T0 = 1_767_225_600_000_000_000
FIELDS = [("Socket", 10), ("Irp", 10), ("Flags", 8), ("Length", 9), ("Status", 8), ("Payload", 14)]


def rewrite_uncompressed(source: Path, out: Path) -> None:
    etl = EtlFile(source)
    h = etl.header
    with open(out, "w+b") as f:
        w = EtlWriter(
            f,
            start_ns=h.start_ns,
            qpc_start=h.header_timestamp,
            qpc_frequency=h.perf_freq,
            buffer_size=64 << 10,
        )
        for info in etl.buffers[1:]:
            for buf, pos, size, _kind in etl._records(info):
                w.raw_record(buf[pos : pos + size])
        w.close()


def generated(out: Path, events: int, compress: bool) -> None:
    with open(out, "w+b") as f:
        w = EtlWriter(f, start_ns=T0, buffer_size=64 << 10, compress=compress)
        frame = b"\x02" * 12 + b"\x08\x00" + bytes(1400)
        for i in range(events // 2):
            w.tracelogging(
                T0 + 2000 * i,
                "WskReplay",
                "0b8e9a6f-2a5d-5f3c-9d1e-7c4b2a1f0e9d",
                "SendEx",
                FIELDS,
                [
                    0xFFFF800000001000,
                    0xFFFFC00000002000 + 8 * (i % 64),
                    2,
                    1400,
                    0x103,
                    bytes((i + k) % 251 for k in range(64)),
                ],
            )
            w.pktmon_packet(T0 + 2000 * i + 900, i, frame)
        w.close()


def full_decode(path: Path) -> int:
    n = 0
    for ev in EtlFile(path).events():
        _decoded(ev)
        n += 1
    return n


def etl_parser_records(path: Path) -> int:
    import etl.etl as etl_parser

    parsed = etl_parser.build_from_stream(path.read_bytes())
    return sum(1 for chunk in parsed.chunks for _ in etl_parser.ChunkParser.parse(chunk.payload))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("bench-out"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    net = args.dir / "net.4.5.2.x64.etl"
    with zipfile.ZipFile(SHARED / "perfview__net.4.5.2.x64.etl.zip") as z:
        net.write_bytes(z.read(next(n for n in z.namelist() if n.endswith(".etl"))))
    net_plain = args.dir / "net.4.5.2.x64-uncompressed.etl"
    rewrite_uncompressed(net, net_plain)
    gen_plain, gen_comp = args.dir / "generated.etl", args.dir / "generated-compressed.etl"
    generated(gen_plain, args.events, compress=False)
    generated(gen_comp, args.events, compress=True)

    head = ("input", "MB", "records", "operation", "seconds", "records/s", "MB/s")
    widths = (34, -7, -8, 24, -8, -11, -7)
    print(
        " ".join(f"{h:>{-w}}" if w < 0 else f"{h:{w}}" for h, w in zip(head, widths, strict=True))
    )
    rates: dict[tuple[str, str], float] = {}
    for path in (net, net_plain, gen_plain, gen_comp):
        mb = path.stat().st_size / 1e6
        records = etl_summary(EtlFile(path))["events"]
        ops = [
            ("summary", lambda p=path: etl_summary(EtlFile(p))),
            ("full decode", lambda p=path: full_decode(p)),
        ]
        if not any(b.compressed for b in EtlFile(path).buffers):
            ops.append(("etl-parser (records)", lambda p=path: etl_parser_records(p)))
        for name, fn in ops:
            secs = best_of(1 if name.startswith("etl-parser") else args.repeat, fn)
            rates[(path.name, name)] = records / secs
            rate = records / secs
            print(
                f"{path.name:34} {mb:7.1f} {records:8d} {name:24} {secs:8.3f} {rate:11,.0f} "
                f"{mb / secs:7.1f}"
            )
    for path in (net_plain, gen_plain):
        ratio = rates[(path.name, "summary")] / rates[(path.name, "etl-parser (records)")]
        print(f"summary vs etl-parser on {path.name}: {ratio:.0f}x")

    etl = EtlFile(net)
    buffers = [
        (
            bytes(etl._data[b.offset + BUFFER_HEADER_SIZE : b.offset + b.size]),
            b.fill - BUFFER_HEADER_SIZE,
        )
        for b in etl.buffers
        if b.compressed
    ]
    out_mb = sum(size for _, size in buffers) / 1e6
    for name, fn in (
        ("C accelerator", xpress.decompress),
        ("pure Python", xpress.decompress_python),
    ):
        if name == "C accelerator" and not xpress.ACCELERATED:
            print("XPRESS C accelerator: not built")
            continue
        secs = best_of(
            args.repeat if name.startswith("C") else 1, lambda f=fn: [f(d, s) for d, s in buffers]
        )
        print(
            f"XPRESS {name}: {len(buffers)} buffers, {out_mb:.1f} MB out in {secs:.3f} s "
            f"= {out_mb / secs:.0f} MB/s"
        )
    span = (etl.header.end_ns - filetime_to_ns(etl.header.start_filetime)) / 1e9
    print(f"(net.4.5.2 spans {span:.1f} s)")


if __name__ == "__main__":
    main()
