"""A real-target replay's capture (replayer/capture.py) holds every packet sent before it
is stopped: it is stopped only once dumpcap has written the end marker sent after the
replay. Checked with dumpcap on loopback, tshark counting what the file holds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading

import pytest

from wskreplay.errors import TargetError
from wskreplay.replayer import capture, netns
from wskreplay.replayer.capture import END_MARKER_PORT, WireCapture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="capturing on loopback needs root")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_ports_in(path) -> list[int]:
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "udp", "-T", "fields", "-e", "udp.dstport"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [int(x) for x in out.split()]


def test_a_burst_sent_just_before_the_capture_stops_is_all_in_the_file(tmp_path):
    """dumpcap writes a packet half a second or more after it passes; stopping it at once
    lost such a burst (0 of 5 in most tries before the end marker)."""
    port = free_udp_port()
    path = tmp_path / "wire.pcapng"
    with (
        WireCapture(path, "lo", f"udp and dst port {port}", "127.0.0.1"),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
    ):
        for i in range(50):
            s.sendto(b"%03d" % i, ("127.0.0.1", port))
    assert udp_ports_in(path) == [port] * 50 + [END_MARKER_PORT]


def test_a_capture_that_does_not_write_its_end_marker_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "END_MARKER_TIMEOUT_S", 0.5)
    path = tmp_path / "wire.pcapng"
    wire = WireCapture(path, "lo", f"udp and dst port {free_udp_port()}", "127.0.0.1")
    with pytest.raises(TargetError) as caught, wire:
        os.kill(wire.proc.pid, signal.SIGSTOP)
        threading.Timer(1.0, os.kill, (wire.proc.pid, signal.SIGCONT)).start()
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "end marker 0.5 s after the replay ended" in message
    assert wire.proc.returncode is not None


def test_a_capture_that_died_during_the_replay_fails_with_one_line(tmp_path):
    path = tmp_path / "wire.pcapng"
    wire = WireCapture(path, "lo", f"udp and dst port {free_udp_port()}", "127.0.0.1")
    with pytest.raises(TargetError) as caught, wire:
        wire.proc.kill()
        wire.proc.wait()
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message and "dumpcap stopped during the replay" in message


def test_an_unreachable_end_marker_host_fails_with_one_line(tmp_path):
    """In a namespace with only loopback, no route leads to the marker's host."""
    path = tmp_path / "wire.pcapng"
    with netns.namespace("c") as ns:
        netns.run("ip", "-n", ns, "link", "set", "lo", "up")
        wire = WireCapture(path, "lo", "udp and dst port 1", "203.0.113.9", ns)
        with pytest.raises(TargetError) as caught, wire:
            pass
    message = str(caught.value)
    assert "\n" not in message
    assert "sending the capture's end marker to 203.0.113.9 port 9: " in message
    assert wire.proc.returncode is not None
