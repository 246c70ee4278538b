"""The wire output of a real-target replay: a dumpcap capture on the sender's interface,
read back with the project's own capture reader and TCP reassembly.

The capture's timestamps are CLOCK_REALTIME; a replay runs on CLOCK_MONOTONIC. The offset
between the two is read once, just before the replay starts, and applied to every frame.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import numpy as np

from wskreplay.errors import TargetError, WskReplayError
from wskreplay.formats.etl_packets import read_capture
from wskreplay.recorder import tcp
from wskreplay.recorder.build import assemble_stream, connection_segments, wire_events
from wskreplay.replayer.netns import entered, in_namespace
from wskreplay.trace.model import Direction, Event, SegmentTable, Stream

READY_TIMEOUT_S = 15.0
SETTLE_S = 0.3
"""dumpcap says it is capturing a moment before it is: the wait after it says so."""
END_MARKER_PORT = 9
"""The UDP port (discard) of the datagram that marks the end of a replay in its capture."""
END_MARKER_TIMEOUT_S = 10.0
"""The longest a capture may take to write its end marker before the replay fails."""


class WireCapture:
    """dumpcap on ``interface`` (inside ``namespace``) with a BPF ``capture_filter``, while
    the ``with`` block runs.

    dumpcap holds packets for half a second or more before it writes them (libpcap hands
    over a block of them 250 ms after its first, and dumpcap writes on a timer of its own),
    and packets not yet written are lost when it is stopped. So a capture is stopped only
    once it has written an end marker sent after the replay: a UDP datagram to
    ``end_marker_host`` (a host reached through ``interface``), port
    :data:`END_MARKER_PORT`, carrying a nonce; every packet before it is then in the file.
    The marker stays in the capture (``--pcap-out``) as its last datagram."""

    def __init__(
        self,
        path: Path,
        interface: str,
        capture_filter: str,
        end_marker_host: str,
        namespace: str | None = None,
    ) -> None:
        self.path = path
        self.end_marker_host = end_marker_host
        self.namespace = namespace
        marker = f"udp and dst port {END_MARKER_PORT} and dst host {end_marker_host}"
        full_filter = f"({capture_filter}) or ({marker})"
        cmd = ["dumpcap", "-q", "-i", interface, "-f", full_filter, "-w", str(path)]
        self.cmd = in_namespace(namespace, *cmd)
        self.proc: subprocess.Popen[str] | None = None
        self.stopped = False
        """Whether the ``with`` block has ended (a second ``__exit__`` does nothing)."""
        self.stderr = ""

    def __enter__(self) -> WireCapture:
        try:
            self.proc = subprocess.Popen(
                self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        except FileNotFoundError:
            raise TargetError("dumpcap: not installed (Debian package wireshark-common)") from None
        assert self.proc.stderr is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            lines.append(line.strip())
            if line.startswith(("Capturing on", "File:")):
                time.sleep(SETTLE_S)
                return self
        self._stop()
        raise TargetError(
            f"dumpcap did not start: {' / '.join(x for x in lines if x) or 'no output'}"
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is None or self.stopped:
            return
        self.stopped = True
        try:
            if kind is None:
                self._write_end_marker()
        finally:
            self._stop()

    def _write_end_marker(self) -> None:
        """Send the end marker and wait until the capture file holds it."""
        assert self.proc is not None
        nonce = b"wskreplay end of replay " + os.urandom(16).hex().encode()
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.end_marker_host, END_MARKER_PORT, type=socket.SOCK_DGRAM
            )[0]
            with entered(self.namespace), socket.socket(family, kind, proto) as sock:
                sock.sendto(nonce, address)
        except OSError as exc:
            raise TargetError(
                f"{self.path}: sending the capture's end marker to {self.end_marker_host} "
                f"port {END_MARKER_PORT}: {exc.strerror or exc}"
            ) from None
        deadline = time.monotonic() + END_MARKER_TIMEOUT_S
        seen = 0
        tail = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TargetError(
                    f"{self.path}: dumpcap stopped during the replay (exit status "
                    f"{self.proc.returncode}): the capture would miss the replay's last packets"
                )
            if self.path.exists():
                with open(self.path, "rb") as f:
                    f.seek(seen)
                    more = f.read()
                seen += len(more)
                window = tail + more
                if nonce in window:
                    return
                tail = window[-len(nonce) :]
            time.sleep(0.02)
        raise TargetError(
            f"{self.path}: dumpcap had not written the replay's end marker "
            f"{END_MARKER_TIMEOUT_S:g} s after the replay ended: the capture would miss the "
            "replay's last packets"
        )

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Wire:
    segments: SegmentTable
    streams: dict[tuple[int, Direction], Stream] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    frames: int = 0


def clock_offset_ns() -> int:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC, now (the narrowest of a few readings)."""
    best: tuple[int, int] | None = None
    for _ in range(5):
        a = time.monotonic_ns()
        r = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) // 2)
    assert best is not None
    return best[1]


def read_wire(
    path: Path,
    local_ports: dict[int, int],
    shift_ns: int,
    peer_ports: dict[int, int] | None = None,
) -> Wire:
    """Segments and streams of each socket in the capture at ``path``, times moved by
    ``shift_ns``; the socket's side is OUT. A socket is found by its local port, or, where
    that is 0 (an agent whose provider does not tell it), as the client of its own peer's
    port in ``peer_ports`` (each socket's peer listens on a port of its own)."""
    if not path.is_file() or os.path.getsize(path) == 0:
        raise TargetError(f"{path}: the wire capture is missing")
    try:
        frames = read_capture(str(path))
        if frames.error is not None:
            raise frames.error
        result = tcp.reassemble(frames)
    except WskReplayError as exc:
        raise TargetError(f"reading the replay's own capture: {exc}") from None
    by_port = {port: sid for sid, port in local_ports.items() if port}
    by_peer = {port: sid for sid, port in (peer_ports or {}).items() if not local_ports.get(sid)}
    tables = []
    wire = Wire(SegmentTable.empty(), frames=len(frames))
    buffer = result.buffer
    for conn in result.connections:
        for local_is_client, sid in (
            (True, by_port.get(conn.client[2])),
            (False, by_port.get(conn.server[2])),
            (True, by_peer.get(conn.server[2])),
        ):
            if sid is None:
                continue
            tables.append(
                connection_segments(
                    conn, result.segments, sid, local_is_client=local_is_client, shift_ns=shift_ns
                )
            )
            wire.events += wire_events(
                conn, result.segments, sid, local_is_client=local_is_client, shift_ns=shift_ns
            )
            sent = conn.to_server if local_is_client else conn.to_client
            got = conn.to_client if local_is_client else conn.to_server
            for d, direction in ((sent, Direction.OUT), (got, Direction.IN)):
                wire.streams[(sid, direction)] = assemble_stream(
                    sid, direction, d.length, d, buffer
                )
            break
    if tables:
        merged = SegmentTable.concat(tables)
        order = np.lexsort((merged.column("socket"), merged.column("time_ns")))
        wire.segments = merged.take(order)
    return wire
