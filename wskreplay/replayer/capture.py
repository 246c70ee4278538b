"""The wire output of a real-target replay: a dumpcap capture on the sender's interface,
read back with the project's own capture reader and TCP reassembly.

The capture's timestamps are CLOCK_REALTIME; a replay runs on CLOCK_MONOTONIC. The offset
between the two is read once, just before the replay starts, and applied to every frame.
"""

from __future__ import annotations

import os
import signal
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
from wskreplay.replayer.netns import in_namespace
from wskreplay.trace.model import Direction, Event, SegmentTable, Stream

READY_TIMEOUT_S = 15.0
SETTLE_S = 0.3
"""dumpcap says it is capturing a moment before it is: the wait after it says so."""
QUIET_S = 0.3
"""libpcap hands dumpcap a block of packets when it fills or 250 ms after its first
packet, and packets in a block not yet handed over are lost when dumpcap is stopped: the
capture is stopped only once its file has not grown for this long."""
DRAIN_TIMEOUT_S = 5.0


class WireCapture:
    """dumpcap on ``interface`` (inside ``namespace``) with a BPF ``capture_filter``, while
    the ``with`` block runs."""

    def __init__(
        self, path: Path, interface: str, capture_filter: str, namespace: str | None = None
    ) -> None:
        self.path = path
        cmd = ["dumpcap", "-q", "-i", interface, "-f", capture_filter, "-w", str(path)]
        self.cmd = in_namespace(namespace, *cmd)
        self.proc: subprocess.Popen[str] | None = None
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
        if kind is None:
            self._drain()
        self._stop()

    def _drain(self) -> None:
        """Wait until the capture file has not grown for QUIET_S (at most DRAIN_TIMEOUT_S):
        a loaded machine's dumpcap can be late writing the replay's last packets."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        size, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_size = self.path.stat().st_size if self.path.exists() else 0
            if now_size != size:
                size, quiet_since = now_size, time.monotonic()
            elif time.monotonic() - quiet_since >= QUIET_S:
                return
            time.sleep(0.02)

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
