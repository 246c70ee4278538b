"""Pacing accuracy of the socket target against tcpreplay, in the same run.

    python benchmarks/bench_pacing.py [--calls 3000]   (root: network namespaces)

A trace of small NODELAY sends at log-uniform gaps (10 us to 10 ms) is replayed through
the socket target (netns topology) with ``--link none``: a plain veth pair, the link
tcpreplay gets; the same schedule, one frame per call, is written to a pcap and replayed by
``tcpreplay`` onto a veth pair between two namespaces of its own. The socket target runs
once more on its default link, the recorded one (this trace holds no segments, so the
default 1 ms RTT, through the user-space forwarder on kernels without netem). Both are
measured from a capture of the frames on the wire (the socket target's on its driver-side
interface, tcpreplay's at the far end of its veth): the error of each inter-packet gap
(actual minus recorded), its median, p99 and max, and the end-of-run drift (replay
duration against recorded duration). The socket target's own record of each call's
lateness (issue vs schedule) is printed too, overall and by the recorded gap before the
call.

A third sender sets the floor under the socket target: a bare loop (one kernel TCP
socket, NODELAY, the same sleep-then-spin wait, no WSK state machine, no counters) on the
same topology, with the kernel's TX timestamps of each send (SO_TIMESTAMPING: entering the
qdisc, handed to the device). It shows what the kernel path from ``send()`` to the
captured frame costs, and how long ``send()`` itself takes, independent of wskreplay.
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from wskreplay.formats.pcap import PcapngWriter  # noqa: E402
from wskreplay.formats.tcpip import TCP_ACK, TCP_PSH, build_tcp_frame  # noqa: E402
from wskreplay.generators.pacing_trace import pacing_trace  # noqa: E402
from wskreplay.replayer import netns  # noqa: E402
from wskreplay.replayer.capture import WireCapture  # noqa: E402
from wskreplay.replayer.engine import ReplayOptions  # noqa: E402
from wskreplay.replayer.link import LinkSpec  # noqa: E402
from wskreplay.replayer.pacing import SPIN_NS, precise_sleeps, spin_until  # noqa: E402
from wskreplay.replayer.profile import load_profile  # noqa: E402
from wskreplay.replayer.targets.socket import (  # noqa: E402
    PEER_ADDR,
    SENDER_ADDR,
    SocketTargetOptions,
    netns_topology,
    replay_socket,
)

SO_TIMESTAMPING = 37
TX_STAMPS = (1 << 1) | (1 << 4) | (1 << 7) | (1 << 8) | (1 << 11)
"""SOF_TIMESTAMPING_TX_SOFTWARE | SOFTWARE | OPT_ID | TX_SCHED | OPT_TSONLY."""
SCM_TSTAMP_SND, SCM_TSTAMP_SCHED = 0, 1
SINK = (
    "import socket, sys\n"
    "s = socket.create_server((sys.argv[1], 5001))\n"
    "print('ready', flush=True)\n"
    "c, _ = s.accept()\n"
    "while c.recv(65536): pass\n"
)


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


def socket_target(
    calls: int, folder: Path, link: str | None
) -> tuple[dict[str, float], dict[str, Any]]:
    """``link``: the ``--link`` text, None for the recorded link (the trace holds no
    segments, so each socket gets the default 1 ms RTT, through the user-space forwarder)."""
    trace = pacing_trace(calls, nodelay=True)
    pcap = folder / "socket.pcapng"
    replayed = replay_socket(
        trace,
        ReplayOptions(load_profile("windows-tcpip")),
        SocketTargetOptions(link=link, keep_capture=pcap),
    )
    seen = data_times(pcap, "192.0.2.1")
    pacing = dict(replayed.metadata["pacing"])
    pacing["link_kind"] = replayed.metadata["target"]["link_kind"]
    pacing["gap_before_ns"] = np.diff(trace.calls.column("issue_ns").astype(np.int64))
    return gap_errors(trace.calls.column("issue_ns"), seen), pacing


def lateness_by_gap(pacing: dict[str, Any]) -> list[str]:
    """How late calls went out, by the recorded gap before them: a call after a gap
    shorter than the previous call's work is late by the difference."""
    late = np.asarray(pacing["lateness_ns"][1:], np.int64)
    gap = pacing["gap_before_ns"]
    lines = []
    for low, high in ((0, 20), (20, 50), (50, 200), (200, None)):
        inside = (gap >= low * 1000) & ((gap < high * 1000) if high else True)
        if inside.any():
            q = np.percentile(late[inside], [50, 99]) / 1e3
            span = f"{low}-{high} us" if high else f">= {low} us"
            lines.append(f"  gap {span:10} {int(inside.sum()):5} calls  late median "
                         f"{q[0]:6.1f}  p99 {q[1]:6.1f} us")  # fmt: skip
    return lines


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


def tx_stamps(sock: socket.socket, into: dict[int, dict[int, int]]) -> None:
    """The TX timestamps waiting on ``sock``'s error queue: into[kind][last byte] = ns."""
    while True:
        try:
            _, ancillary, _, _ = sock.recvmsg(0, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        stamp = kind = last_byte = None
        for level, kind_of, data in ancillary:
            if level == socket.SOL_SOCKET and kind_of == SO_TIMESTAMPING:
                seconds, nanos = struct.unpack_from("qq", data)
                stamp = seconds * 1_000_000_000 + nanos
            elif level == socket.SOL_IP:
                *_, kind, last_byte = struct.unpack_from("IBBBBII", data)
        if kind in into and stamp is not None and last_byte is not None:
            into[kind][last_byte] = stamp


def bare_sender(calls: int, folder: Path) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The floor: the schedule sent by a bare loop on the socket target's topology."""
    trace = pacing_trace(calls, nodelay=True)
    issue = trace.calls.column("issue_ns").astype(np.int64)
    size = int(trace.calls.column("length")[0])
    realtime = time.CLOCK_REALTIME
    started = np.zeros(calls, np.int64)
    returned = np.zeros(calls, np.int64)
    stamps: dict[int, dict[int, int]] = {SCM_TSTAMP_SND: {}, SCM_TSTAMP_SCHED: {}}
    pcap = folder / "bare.pcapng"
    with netns_topology(LinkSpec()) as topo:
        sink = subprocess.Popen(
            netns.in_namespace(topo.peer_ns, sys.executable, "-c", SINK, PEER_ADDR),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
            with netns.entered(topo.sender_ns):
                sock = socket.socket()
            with sock:
                sock.connect((PEER_ADDR, 5001))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, TX_STAMPS)
                payload = bytes(size)
                precise_sleeps()
                with WireCapture(pcap, topo.interface, "tcp port 5001", PEER_ADDR,
                                 topo.sender_ns):  # fmt: skip
                    start = time.monotonic_ns() + 50_000_000
                    for i in range(calls):
                        due = start + int(issue[i] - issue[0])
                        while (left := due - time.monotonic_ns()) > SPIN_NS:
                            time.sleep((left - SPIN_NS) / 1e9)
                            tx_stamps(sock, stamps)
                        spin_until(due)
                        started[i] = time.clock_gettime_ns(realtime)
                        sock.send(payload)
                        returned[i] = time.clock_gettime_ns(realtime)
                    time.sleep(0.2)
                    tx_stamps(sock, stamps)
        finally:
            sink.kill()
            sink.wait()
    seen = data_times(pcap, SENDER_ADDR)
    last_bytes = (np.arange(calls) * size + size - 1).tolist()
    if any(len(stamps[k]) < calls for k in stamps):
        raise SystemExit(f"only {[len(v) for v in stamps.values()]} TX timestamps of {calls}")
    sched = np.array([stamps[SCM_TSTAMP_SCHED][b] for b in last_bytes], np.int64)
    device = np.array([stamps[SCM_TSTAMP_SND][b] for b in last_bytes], np.int64)
    path = {
        "send() duration": returned - started,
        "send() start -> qdisc": sched - started,
        "qdisc -> device": device - sched,
        "send() start -> captured": seen - started,
    }
    return gap_errors(issue, seen), path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_pacing needs root (network namespaces)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours, lateness = socket_target(args.calls, folder, "none")
        forwarded, forwarded_lateness = socket_target(args.calls, folder, None)
        theirs = tcpreplay(args.calls, folder)
        bare, kernel_path = bare_sender(args.calls, folder)
    print(f"{args.calls} calls, gaps 10 us - 10 ms (log-uniform), measured from captures")
    print(f"{'':34}{'median us':>12}{'p99 us':>12}{'max us':>12}{'drift %':>12}")
    rows = (
        (f"wskreplay socket, {lateness['link_kind']}", ours),
        ("tcpreplay, veth", theirs),
        ("bare TCP sender, veth", bare),
        (f"wskreplay socket, {forwarded_lateness['link_kind']} 1 ms", forwarded),
    )
    for name, r in rows:
        print(f"{name:34}{r['median_us']:12.1f}{r['p99_us']:12.1f}{r['max_us']:12.1f}"
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
    print("\n".join(lateness_by_gap(lateness)))
    print("the bare sender's kernel path (TX timestamps, capture):")
    for name, ns in kernel_path.items():
        q = np.percentile(ns, [50, 90, 99]) / 1e3
        print(f"  {name:26} median {q[0]:6.1f}  p90 {q[1]:6.1f}  p99 {q[2]:6.1f}  max"
              f" {ns.max() / 1e3:6.1f} us")  # fmt: skip


if __name__ == "__main__":
    main()
