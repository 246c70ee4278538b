"""A real Linux TCP transfer, captured by tshark: the kernel as the oracle for the
emulator's segmentation.

Two network namespaces of their own (created and removed here; needs root), a sender and a
reading receiver, joined by a veth pair with the MTU of Ethernet (1500). The sender's
generic segmentation offload is capped at the MTU, so the capture on its interface shows
the segments the kernel's TCP chose rather than 64 KB super-segments. The receiver reads
nothing until the sender is done (its buffer holds the whole transfer), so its ACKs come
from TCP alone: at once for every second full-sized segment and during the quick-ACK
phase of a new connection, else after the delayed-ACK timer (about 40 ms). On a veth pair
the round trip is a few microseconds; only the delayed ACK gives Nagle's algorithm
something to wait for that is long against the scheduling noise of a shared machine.
(The kernels here have no netem.)
Two Linux features the emulator does not model are off in the sender's namespace
(docs/emulator.md): autocorking (deferring a push while an earlier packet of the socket
still sits in the host's queues) and tail loss probes (RFC 8985: a retransmission of the
last segment when its ACK is late, which a delayed ACK triggers).
The sender logs each write (CLOCK_REALTIME ns, the capture's clock) before making it.

Addresses are 192.0.2.1 and 192.0.2.2 (TEST-NET-1, documentation only), inside the two
namespaces; nothing leaves them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PEER = r"""
import json, socket, sys, time
role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "receive":
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    listener.bind((host, port))
    listener.listen(1)
    print("ready", flush=True)
    conn, _ = listener.accept()
    time.sleep(float(sys.argv[4]))
    total = 0
    while chunk := conn.recv(1 << 16):
        total += len(chunk)
    print(total, flush=True)
else:
    nodelay, plan = sys.argv[4] == "1", json.loads(sys.argv[5])
    client = socket.create_connection((host, port))
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if nodelay else 0)
    writes = []
    time.sleep(0.05)
    for step in plan:
        if isinstance(step, list):
            for n in step:
                writes.append((time.time_ns(), n))
                client.sendall(b"w" * n)
        else:
            time.sleep(step / 1000)
    time.sleep(0.05)
    client.close()
    print(json.dumps(writes), flush=True)
"""
SENDER_ADDR, RECEIVER_ADDR = "192.0.2.1", "192.0.2.2"


@dataclass(frozen=True)
class Transfer:
    capture: Path
    writes: list[tuple[int, int]]
    """(CLOCK_REALTIME ns, bytes) of each write the sender made, in order."""


def _run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


def _in(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def capture_transfer(directory: Path, plan: list, *, nodelay: bool, port: int) -> Transfer:
    """Run ``plan`` (lists of write sizes made back to back, numbers = pauses in ms) from
    the sender to the receiver, captured on the sender's interface."""
    tag = f"{os.getpid()}-{port}"
    sender_ns, receiver_ns = f"wskr-s-{tag}", f"wskr-r-{tag}"
    capture = directory / f"linux-{'nodelay' if nodelay else 'nagle'}.pcapng"
    _run("ip", "netns", "add", sender_ns)
    _run("ip", "netns", "add", receiver_ns)
    try:
        _run("ip", "link", "add", "wskr-s", "netns", sender_ns, "type", "veth",
             "peer", "name", "wskr-r", "netns", receiver_ns)  # fmt: skip
        _run("ip", "-n", sender_ns, "addr", "add", f"{SENDER_ADDR}/24", "dev", "wskr-s")
        _run("ip", "-n", receiver_ns, "addr", "add", f"{RECEIVER_ADDR}/24", "dev", "wskr-r")
        _run("ip", "-n", sender_ns, "link", "set", "wskr-s", "mtu", "1500",
             "gso_max_size", "1500", "up")  # fmt: skip
        _run("ip", "-n", receiver_ns, "link", "set", "wskr-r", "mtu", "1500", "up")
        for setting in ("tcp_autocorking", "tcp_early_retrans"):
            _run(*_in(sender_ns, "sh", "-c", f"echo 0 > /proc/sys/net/ipv4/{setting}"))
        _run(*_in(sender_ns, "ethtool", "-K", "wskr-s", "tso", "off", "gso", "off"))
        tshark = subprocess.Popen(
            _in(
                sender_ns,
                "tshark",
                "-q",
                "-i",
                "wskr-s",
                "-f",
                f"tcp port {port}",
                "-w",
                str(capture),
            ),  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        receiver = subprocess.Popen(
            _in(
                receiver_ns,
                sys.executable,
                "-c",
                PEER,
                "receive",
                RECEIVER_ADDR,
                str(port),
                str(_duration_s(plan) + 0.5),
            ),  # fmt: skip
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for(tshark.stderr, "Capturing on", tshark)
            _wait_for(receiver.stdout, "ready", receiver)
            time.sleep(0.5)  # tshark says "Capturing on" a moment before it captures
            sender = _run(
                *_in(
                    sender_ns,
                    sys.executable,
                    "-c",
                    PEER,
                    "send",
                    RECEIVER_ADDR,
                    str(port),
                    "1" if nodelay else "0",
                    json.dumps(plan),
                ),  # fmt: skip
            )
            received, _ = receiver.communicate(timeout=30)
            time.sleep(0.3)
        finally:
            receiver.kill()
            tshark.send_signal(signal.SIGINT)
            tshark.wait(timeout=30)
    finally:
        for ns in (sender_ns, receiver_ns):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
    writes = [(int(t), int(n)) for t, n in json.loads(sender.stdout)]
    assert int(received) == sum(n for _, n in writes)
    return Transfer(capture, writes)


def _duration_s(plan: list) -> float:
    return sum(step for step in plan if not isinstance(step, list)) / 1000 + 0.1


def _wait_for(stream, text: str, proc: subprocess.Popen) -> None:
    """Until ``proc`` prints a line holding ``text`` on ``stream``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = stream.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[3]} exited with {proc.returncode}: no {text!r}")
    raise RuntimeError(f"no {text!r} from {proc.args[3]} within 30 s")
