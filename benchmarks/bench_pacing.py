"""Pacing accuracy of the socket target against tcpreplay, in the same run.

    python benchmarks/bench_pacing.py [--calls 3000]   (root: network namespaces)

A trace of small NODELAY sends at log-uniform gaps (10 us to 10 ms) is replayed through
the socket target (netns topology, no link conditions); the same schedule, one frame per
call, is written to a pcap and replayed by ``tcpreplay`` onto a veth pair between two
namespaces of its own. Both are measured from a capture of the frames on the wire (the
socket target's on its driver-side interface, tcpreplay's at the far end of its veth): the
error of each inter-packet gap (actual minus recorded), its median, p99
and max, and the end-of-run drift (replay duration against recorded duration). The
socket target's own record of each call's lateness (issue vs schedule) is printed too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from wskreplay.formats.pcap import PcapngWriter  # noqa: E402
from wskreplay.formats.tcpip import TCP_ACK, TCP_PSH, build_tcp_frame  # noqa: E402
from wskreplay.generators.pacing_trace import pacing_trace  # noqa: E402
from wskreplay.replayer import netns  # noqa: E402
from wskreplay.replayer.capture import WireCapture  # noqa: E402
from wskreplay.replayer.engine import ReplayOptions  # noqa: E402
from wskreplay.replayer.profile import load_profile  # noqa: E402
from wskreplay.replayer.targets.socket import SocketTargetOptions, replay_socket  # noqa: E402


def gap_errors(recorded_ns: np.ndarray, seen_ns: np.ndarray) -> dict[str, float]:
    if len(seen_ns) != len(recorded_ns):
        raise SystemExit(f"capture has {len(seen_ns)} packets, expected {len(recorded_ns)}")
    err = np.abs(np.diff(seen_ns) - np.diff(recorded_ns))
    span_rec = recorded_ns[-1] - recorded_ns[0]
    span = seen_ns[-1] - seen_ns[0]
    return {
        "median_us": float(np.median(err)) / 1e3,
        "p99_us": float(np.percentile(err, 99)) / 1e3,
        "max_us": float(err.max()) / 1e3,
        "drift_pct": 100.0 * (span - span_rec) / span_rec,
    }


def data_times(path: Path, src: str) -> np.ndarray:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", f"ip.src=={src} && tcp.len>0", "-T", "fields",
         "-e", "frame.time_epoch"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return np.array([round(float(x) * 1e9) for x in out.split()], np.int64)


def socket_target(calls: int, folder: Path) -> tuple[dict[str, float], dict[str, int]]:
    trace = pacing_trace(calls, nodelay=True)
    pcap = folder / "socket.pcapng"
    replayed = replay_socket(
        trace,
        ReplayOptions(load_profile("windows-tcpip")),
        SocketTargetOptions(keep_capture=pcap),
    )
    seen = data_times(pcap, "192.0.2.1")
    return gap_errors(trace.calls.column("issue_ns"), seen), replayed.metadata["pacing"]


def tcpreplay(calls: int, folder: Path) -> dict[str, float]:
    trace = pacing_trace(calls, nodelay=True)
    issue = trace.calls.column("issue_ns")
    source = folder / "schedule.pcap"
    with open(source, "wb") as f:
        w = PcapngWriter(f)
        for i, t in enumerate(issue.tolist()):
            frame = build_tcp_frame("192.0.2.1", 49152, "192.0.2.2", 5001, 1 + 64 * i, 1,
                                    TCP_ACK | TCP_PSH, bytes(64))  # fmt: skip
            w.packet(1_700_000_000_000_000_000 + t, 1, frame)
    with netns.namespace("ts") as s, netns.namespace("tr") as r:
        netns.run("ip", "link", "add", "wskr-tx", "netns", s, "type", "veth", "peer", "name",
                  "wskr-rx", "netns", r)  # fmt: skip
        for ns, dev in ((s, "wskr-tx"), (r, "wskr-rx")):
            netns.run("ip", "-n", ns, "link", "set", dev, "up")
        # The capture's end marker leaves through wskr-rx: an address and a neighbour there.
        netns.run("ip", "-n", r, "addr", "add", "198.51.100.2/24", "dev", "wskr-rx")
        netns.run("ip", "-n", r, "neigh", "add", "198.51.100.1", "lladdr", "02:00:00:00:00:01",
                  "dev", "wskr-rx", "nud", "permanent")  # fmt: skip
        far = folder / "tcpreplay.pcapng"
        with WireCapture(far, "wskr-rx", "tcp", "198.51.100.1", r):
            subprocess.run(netns.in_namespace(s, "tcpreplay", "-q", "-i", "wskr-tx", str(source)),
                           check=True, capture_output=True)  # fmt: skip
    return gap_errors(issue, data_times(far, "192.0.2.1"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_pacing needs root (network namespaces)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours, lateness = socket_target(args.calls, folder)
        theirs = tcpreplay(args.calls, folder)
    print(f"{args.calls} calls, gaps 10 us - 10 ms (log-uniform), measured from captures")
    print(f"{'':24}{'median us':>12}{'p99 us':>12}{'max us':>12}{'drift %':>12}")
    for name, r in (("wskreplay socket", ours), ("tcpreplay", theirs)):
        print(f"{name:24}{r['median_us']:12.1f}{r['p99_us']:12.1f}{r['max_us']:12.1f}"
              f"{r['drift_pct']:12.4f}")  # fmt: skip
    print(
        "ratio (tcpreplay / wskreplay): median {:.2f}, p99 {:.2f}, max {:.2f}".format(
            *(theirs[k] / max(ours[k], 1e-9) for k in ("median_us", "p99_us", "max_us"))
        )
    )
    print(
        "wskreplay's own lateness record (issue vs schedule): median {:.1f} us, p99 {:.1f} us,"
        " max {:.1f} us".format(
            lateness["median_ns"] / 1e3, lateness["p99_ns"] / 1e3, lateness["max_ns"] / 1e3
        )
    )


if __name__ == "__main__":
    main()
