"""Throughput and size of the .wskt format against naive encodings of the same calls.

    python benchmarks/bench_format.py [--calls 1000000] [--sockets 8] [--repeat 3]

Generates a synthetic trace (``wskreplay synth``), then, in one run on the same data:
writes it as .wskt (zstd and uncompressed), reads it back column-wise and fully, and
encodes the same calls as one msgpack map per call and as JSON lines (each also
zstd-compressed). Prints best-of-N times, rates and the ratios between them. Timings on a
shared machine are noisy: compare the ratios, which come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import zstandard
from timing import best_of

from wskreplay.formats.wskt import BlockType
from wskreplay.generators.synth import synth_trace
from wskreplay.trace import TraceReader, write_trace
from wskreplay.trace.summary import call_records


def naive_records(trace) -> list[dict]:
    return list(call_records(trace.calls))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--sockets", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--dir", type=Path, default=None, help="where to write the files (default: a temp dir)"
    )
    args = ap.parse_args()
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="bench-format-"))
    workdir.mkdir(parents=True, exist_ok=True)
    n = args.calls

    t = time.perf_counter()
    trace = synth_trace(calls=n, sockets=args.sockets, seed=args.seed)
    synth_s = time.perf_counter() - t
    payload = sum(s.length for s in trace.streams.values())
    print(
        f"synth: {n} calls, {len(trace.segments)} segments, {payload / 1e6:.1f} MB payload "
        f"in {synth_s:.2f} s",
        file=sys.stderr,
    )

    results: dict[str, dict[str, float]] = {}
    zpath, rpath = workdir / "trace.wskt", workdir / "trace-nozstd.wskt"
    results["wskt write (zstd)"] = {"s": best_of(args.repeat, lambda: write_trace(zpath, trace))}
    results["wskt write (no zstd)"] = {
        "s": best_of(args.repeat, lambda: write_trace(rpath, trace, zstd_level=None))
    }

    def read_columns(path: Path) -> None:
        with TraceReader(path) as r:
            assert len(r.calls()) == n

    def read_one_column(path: Path) -> None:
        with TraceReader(path) as r:
            assert len(r.call_column("completion_status")) == n

    def read_full(path: Path) -> None:
        with TraceReader(path) as r:
            assert len(r.read().calls) == n

    results["wskt read calls (zstd)"] = {"s": best_of(args.repeat, lambda: read_columns(zpath))}
    results["wskt read 1 column (zstd)"] = {
        "s": best_of(args.repeat, lambda: read_one_column(zpath))
    }
    results["wskt read calls (no zstd)"] = {"s": best_of(args.repeat, lambda: read_columns(rpath))}
    results["wskt read full trace (zstd)"] = {"s": best_of(args.repeat, lambda: read_full(zpath))}

    with TraceReader(zpath) as r:
        stored_payload = r.payload_bytes()
        block_bytes = {t: 0 for t in BlockType}
        for b in r.blocks:
            block_bytes[BlockType(b.ref.type)] += b.ref.end - b.ref.offset
    size = zpath.stat().st_size
    meta_per_call = (size - stored_payload) / n
    calls_per_call = block_bytes[BlockType.CALLS] / n
    segs_per_segment = block_bytes[BlockType.SEGMENTS] / len(trace.segments)
    raw_meta = (rpath.stat().st_size - stored_payload) / n
    with TraceReader(rpath) as r:
        raw_calls_per_call = (
            sum(b.ref.end - b.ref.offset for b in r.blocks if b.ref.type == BlockType.CALLS) / n
        )

    # Naive encodings of the same calls (every field, no payload).
    records = naive_records(trace)
    mp_path, js_path = workdir / "calls.msgpack", workdir / "calls.jsonl"
    zc = zstandard.ZstdCompressor(level=3)

    def write_msgpack() -> None:
        with open(mp_path, "wb") as f:
            packer = msgpack.Packer()
            for rec in records:
                f.write(packer.pack(rec))

    def write_jsonl() -> None:
        with open(js_path, "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")

    def write_zst(src: Path) -> Callable[[], None]:
        def run() -> None:
            with open(src, "rb") as fin, open(str(src) + ".zst", "wb") as fout:
                zc.copy_stream(fin, fout)

        return run

    def read_msgpack() -> None:
        with open(mp_path, "rb") as f:
            assert sum(1 for _ in msgpack.Unpacker(f)) == n

    def read_jsonl() -> None:
        with open(js_path) as f:
            assert sum(1 for line in f if json.loads(line)) == n

    results["msgpack map/call write"] = {"s": best_of(args.repeat, write_msgpack)}
    results["msgpack map/call read"] = {"s": best_of(args.repeat, read_msgpack)}
    results["jsonl write"] = {"s": best_of(args.repeat, write_jsonl)}
    results["jsonl read"] = {"s": best_of(args.repeat, read_jsonl)}
    mp_zst = best_of(1, write_zst(mp_path))
    js_zst = best_of(1, write_zst(js_path))
    sizes = {
        "wskt calls blocks (zstd)": calls_per_call,
        "wskt calls blocks (no zstd)": raw_calls_per_call,
        "wskt calls+segments+rest (zstd)": meta_per_call,
        "wskt calls+segments+rest (no zstd)": raw_meta,
        "msgpack map/call": mp_path.stat().st_size / n,
        "msgpack map/call + zstd": Path(str(mp_path) + ".zst").stat().st_size / n,
        "jsonl": js_path.stat().st_size / n,
        "jsonl + zstd": Path(str(js_path) + ".zst").stat().st_size / n,
    }

    ours_w = results["wskt write (zstd)"]["s"]
    ours_r = results["wskt read calls (zstd)"]["s"]
    print(
        f"\n{n} calls, {len(trace.segments)} segments, {payload / 1e6:.1f} MB payload, "
        f"file {size / 1e6:.1f} MB; python {sys.version.split()[0]}, {os.cpu_count()} cpus\n"
    )
    print(f"{'operation':36} {'seconds':>9} {'calls/s':>12} {'vs wskt':>9}")
    for name, r in results.items():
        ref = ours_w if "write" in name else ours_r
        print(f"{name:36} {r['s']:9.3f} {n / r['s']:12,.0f} {r['s'] / ref:8.1f}x")
    print(f"{'zstd of msgpack file':36} {mp_zst:9.3f}")
    print(f"{'zstd of jsonl file':36} {js_zst:9.3f}")
    print(f"\n{'bytes per call (no payload)':36} {'bytes':>9} {'vs wskt calls':>14}")
    for name, b in sizes.items():
        print(f"{name:36} {b:9.2f} {b / calls_per_call:13.2f}x")
    print(f"{'wskt segments blocks, per segment':36} {segs_per_segment:9.2f}")
    print(
        f"\nsegments per call: {len(trace.segments) / n:.2f}; "
        f"payload stored once: {stored_payload} of {payload} stream bytes"
    )


if __name__ == "__main__":
    main()
