"""The user-space link between the socket target's namespaces: its delay and loss, read
from captures on both ends by tshark."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time

import pytest

from wskreplay.replayer import netns
from wskreplay.replayer.capture import WireCapture
from wskreplay.replayer.link import LinkDirection, LinkSpec, parse_link
from wskreplay.replayer.targets.socket import PEER_ADDR, SENDER_ADDR, netns_topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

DELAY_NS, LOSS = 20_000_000, 0.05
DATAGRAMS = 2000
ECHO = r"""
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((sys.argv[1], 9001))
t = socket.socket(); t.bind((sys.argv[1], 9002)); t.listen(1)
print("ready", flush=True)
c, _ = t.accept()
while data := c.recv(100):
    c.sendall(data)
"""


def tshark(path, *fields, filter_):
    cmd = ["tshark", "-r", str(path), "-Y", filter_, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def test_link_delay_and_loss_seen_in_captures(tmp_path):
    spec = parse_link(f"delay={DELAY_NS // 1_000_000}ms loss={LOSS * 100:g}% seed=3")
    with netns_topology(spec) as topo:
        echo = subprocess.Popen(
            netns.in_namespace(topo.peer_ns, sys.executable, "-c", ECHO, PEER_ADDR),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert echo.stdout.readline().strip() == "ready"
            near, far = tmp_path / "near.pcapng", tmp_path / "far.pcapng"
            with (
                WireCapture(near, topo.interface, "udp or tcp", PEER_ADDR, topo.sender_ns),
                WireCapture(far, "wskr-peer", "udp or tcp", SENDER_ADDR, topo.peer_ns),
            ):
                with netns.entered(topo.sender_ns):
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    t = socket.socket()
                t.connect((PEER_ADDR, 9002))
                for i in range(30):
                    t.sendall(b"ping%02d" % i)
                    assert t.recv(100) == b"ping%02d" % i
                for i in range(DATAGRAMS):
                    u.sendto(b"%06d" % i, (PEER_ADDR, 9001))
                    time.sleep(0.0002)
                t.close()
                time.sleep(2 * DELAY_NS / 1e9 + 0.2)
        finally:
            echo.kill()
    rtts = sorted(
        float(r) for (r,) in tshark(near, "tcp.analysis.ack_rtt", filter_="tcp.analysis.ack_rtt")
    )
    median = rtts[len(rtts) // 2] * 1e9
    assert abs(median - DELAY_NS) <= 0.1 * DELAY_NS, rtts
    sent = len(tshark(near, "frame.number", filter_="udp.dstport==9001"))
    got = len(tshark(far, "frame.number", filter_="udp.dstport==9001"))
    assert sent == DATAGRAMS
    lost = sent - got
    spread = 2.576 * math.sqrt(sent * LOSS * (1 - LOSS))
    assert sent * LOSS - spread <= lost <= sent * LOSS + spread, lost


def test_link_model_is_deterministic_for_a_seed():
    def fates(seed):
        way = LinkDirection(
            LinkSpec(delay_ns=1000, loss=0.2, reorder=0.1, jitter_ns=50, seed=seed), 0
        )
        return [way.admit(i * 100, 1500) for i in range(500)]

    assert fates(1) == fates(1)
    assert fates(1) != fates(2)
    assert sum(f is None for f in fates(1)) == pytest.approx(100, abs=35)


def test_rate_serializes_frames():
    way = LinkDirection(LinkSpec(rate_bps=8_000_000), 0)
    first, second = way.admit(0, 976), way.admit(0, 976)
    assert (first, second) == (1_000_000, 2_000_000)


def test_frames_for_a_device_not_up_yet_are_dropped_not_fatal():
    """One end up and speaking (ARP, IPv6 neighbour discovery) while the other is still
    down: the kernel refuses the forwarded frames (EIO); the forwarder counts every one
    dropped and keeps running."""
    with netns.namespace("f") as ns:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m",
             "wskreplay.replayer.link_forwarder", "wskrfa", "wskrfb", "seed=1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            netns.run("ip", "-n", ns, "addr", "add", "198.51.100.1/24", "dev", "wskrfa")
            netns.run("ip", "-n", ns, "link", "set", "wskrfa", "up")
            send = "import socket; socket.socket(2, 2).sendto(b'x', ('198.51.100.2', 9))"
            netns.run("ip", "netns", "exec", ns, sys.executable, "-c", send)
            time.sleep(1.0)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            out, err = proc.communicate(input="", timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    counts = json.loads(out.strip().splitlines()[-1])
    assert counts["a_to_b_dropped"] >= 1
    assert counts["a_to_b_dropped"] == counts["a_to_b_forwarded"]
