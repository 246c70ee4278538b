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
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from wskreplay.errors import InputError
from wskreplay.formats.pcap import read_frames
from wskreplay.replayer import netns
from wskreplay.replayer.capture import WireCapture
from wskreplay.replayer.link import LinkDirection, LinkSpec, keys_given, parse_link, tcp_ports
from wskreplay.replayer.targets.socket import PEER_ADDR, SENDER_ADDR, netns_topology

from .conftest import SHARED_DATA

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

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


@contextmanager
def echo_peer(ns: str | None) -> Iterator[None]:
    """:data:`ECHO` running in the peer's namespace, listening, until the block ends."""
    echo = subprocess.Popen(
        netns.in_namespace(ns, sys.executable, "-c", ECHO, PEER_ADDR),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        yield
    finally:
        echo.kill()
        echo.wait()


def tshark(path, *fields, filter_):
    cmd = ["tshark", "-r", str(path), "-Y", filter_, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines() if line]


@needs_root
def test_link_delay_and_loss_seen_in_captures(tmp_path):
    spec = parse_link(f"delay={DELAY_NS // 1_000_000}ms loss={LOSS * 100:g}% seed=3")
    with netns_topology(spec) as topo, echo_peer(topo.peer_ns):
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


@contextmanager
def forwarder(ns: str) -> Iterator[subprocess.Popen[str]]:
    """The link forwarder between TAP devices ``wskrfa`` and ``wskrfb`` in namespace
    ``ns``, once it says ready; killed at the end if it has not stopped."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m",
         "wskreplay.replayer.link_forwarder", "wskrfa", "wskrfb", "seed=1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


@needs_root
def test_frames_for_a_device_not_up_yet_are_dropped_not_fatal():
    """One end up and speaking (ARP, IPv6 neighbour discovery) while the other is still
    down: the kernel refuses the forwarded frames (EIO); the forwarder counts every one
    dropped and keeps running."""
    with netns.namespace("f") as ns, forwarder(ns) as proc:
        netns.run("ip", "-n", ns, "addr", "add", "198.51.100.1/24", "dev", "wskrfa")
        netns.run("ip", "-n", ns, "link", "set", "wskrfa", "up")
        send = "import socket; socket.socket(2, 2).sendto(b'x', ('198.51.100.2', 9))"
        netns.run("ip", "netns", "exec", ns, sys.executable, "-c", send)
        time.sleep(1.0)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        out, err = proc.communicate(input="", timeout=10)
    assert proc.returncode == 0, err
    counts = json.loads(out.strip().splitlines()[-1])
    assert counts["a_to_b_dropped"] >= 1
    assert counts["a_to_b_dropped"] == counts["a_to_b_forwarded"]


@pytest.mark.parametrize(
    "name",
    [
        "zeek__http_1000-requests-one-dropped-response.pcap.gz",  # IPv6
        "zeek__tcp_reassembly.pcap",  # IPv4
        "suricata-verify__bug-4376_syn_retransmit_with_ts.pcap",  # VLAN tags on some frames
    ],
)
def test_tcp_ports_are_tsharks(name):
    """The ports the link reads to choose a connection's delay: tshark's, on every
    untagged Ethernet frame carrying TCP over IPv4 or IPv6; None on every other frame."""
    path = next(SHARED_DATA.glob(f"*/{name}"))
    frames = read_frames(path)
    fields = tshark(path, "frame.protocols", "tcp.srcport", "tcp.dstport", filter_="frame")
    assert len(fields) == len(frames)
    plain = 0
    for i, (protocols, sport, dport) in enumerate(fields):
        layers = protocols.split(":")
        if layers[:4] in (["eth", "ethertype", "ip", "tcp"], ["eth", "ethertype", "ipv6", "tcp"]):
            assert tcp_ports(frames.frame(i)) == (int(sport), int(dport)), i
            plain += 1
        else:
            assert tcp_ports(frames.frame(i)) is None, (i, protocols)
    assert plain >= len(frames) // 2


def test_each_connection_has_its_own_delay():
    spec = parse_link("delay=10ms delay@8080=2ms delay@9090=200ms")
    assert spec.port_delays == ((8080, 2_000_000), (9090, 200_000_000))
    assert parse_link(spec.text()) == spec
    to_peer, from_peer = LinkDirection(spec, 0), LinkDirection(spec, 1)
    assert to_peer.admit(0, 100, (40000, 8080)) == 1_000_000
    assert from_peer.admit(0, 100, (8080, 40000)) == 1_000_000
    assert to_peer.admit(0, 100, (40000, 9090)) == 100_000_000
    assert to_peer.admit(0, 100, (8080, 40000)) == 5_000_000  # not the peer's port that way
    assert to_peer.admit(0, 100) == 5_000_000
    assert keys_given("loss=1% delay@8080=2ms") == {"loss", "delay@"}


def test_none_turns_every_condition_off_and_keeps_the_seed():
    base = parse_link("delay=20ms jitter=1ms loss=1% reorder=2% rate=10mbit seed=7 delay@80=1ms")
    assert parse_link("none", base) == LinkSpec(seed=7)
    assert parse_link("none", base).empty
    assert parse_link("none loss=0.5%", base) == LinkSpec(loss=0.005, seed=7)
    assert parse_link("loss=0.5% none", base) == LinkSpec(seed=7)
    assert keys_given("none") >= {"delay", "delay@", "loss", "rate", "jitter", "reorder"}


@needs_root
def test_a_link_without_conditions_is_a_plain_veth():
    """No conditions and no per-socket delays: the kernel's veth, no forwarder process;
    per-socket delays to come keep the shaping link even when the spec is empty."""
    with netns_topology(LinkSpec()) as topo:
        assert topo.link_kind == "veth" and topo.forwarder is None
        kind = netns.run("ip", "-n", topo.sender_ns, "-d", "link", "show", topo.interface)
        assert "veth" in kind
        with echo_peer(topo.peer_ns):
            with netns.entered(topo.sender_ns):
                t = socket.create_connection((PEER_ADDR, 9002), timeout=5)
            with t:
                t.sendall(b"through the veth")
                assert t.recv(100) == b"through the veth"
    with netns_topology(LinkSpec(), per_socket_delays=True) as topo:
        assert topo.link_kind in ("tap-forwarder", "netem")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("delay@0=1ms", "the port must be 1 to 65535"),
        ("delay@70000=1ms", "the port must be 1 to 65535"),
        ("delay@80=fast", "expected a number with one of"),
        ("delay@=1ms", "expected KEY=VALUE"),
        ("delay@PORT=1ms", "expected KEY=VALUE"),
        ("delay@123456=1ms", "expected KEY=VALUE"),
    ],
)
def test_a_bad_connection_delay_is_refused_in_one_line(text, expected):
    with pytest.raises(InputError) as err:
        parse_link(text)
    assert expected in str(err.value) and "\n" not in str(err.value)


@needs_root
def test_forwarder_takes_conditions_on_its_control_pipe():
    """The socket target sends each socket's delay once the peer's ports are known: the
    forwarder answers each line, refusing a bad one in a line and running on."""
    with netns.namespace("f") as ns, forwarder(ns) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdin.write("delay@8080=2ms delay@9090=30ms\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "applied"
        proc.stdin.write("delay@0=1ms\n")
        proc.stdin.flush()
        refused = proc.stdout.readline().strip()
        assert refused.startswith("refused: link control: ") and "1 to 65535" in refused
        out, err = proc.communicate(input="", timeout=10)
    assert proc.returncode == 0, err
    assert "a_to_b_forwarded" in json.loads(out.strip().splitlines()[-1])
