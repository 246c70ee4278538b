"""The user-space link: forwards Ethernet frames between two TAP devices through a
:class:`~wskreplay.replayer.link.LinkDirection` each way.

Run as ``python -m wskreplay.replayer.link_forwarder TAP_A TAP_B SPEC``: it creates both
TAP devices in its own namespace and prints ``ready``; the parent then moves them into the
namespaces they join. Each line on its standard input is more conditions in ``--link``'s
text (the socket target sends each socket's own delay, ``delay@PORT=``, once the peer's
ports are known), answered with ``applied`` or ``refused: WHY``. It stops when its standard
input closes (the parent ended, however it ended; the TAP devices go with it) and prints
its counts, and the nice value it ran at, as JSON; SIGTERM is ignored.
"""

from __future__ import annotations

import errno
import heapq
import json
import os
import select
import signal
import sys
import time

from wskreplay.errors import WskReplayError
from wskreplay.replayer.link import LinkDirection, LinkSpec, parse_link, tcp_ports
from wskreplay.replayer.netns import open_tap
from wskreplay.replayer.pacing import precise_sleeps

MAX_FRAME = 65_536


def forward(fd_a: int, fd_b: int, spec: LinkSpec, control: int) -> dict[str, int]:
    """Forward until ``control`` (a pipe) reaches end of file; each line it says is more
    conditions (:func:`~wskreplay.replayer.link.parse_link`). Waits are
    select()'s (microsecond timeouts, 1 ns timer slack): no spinning, which would take a
    core from the replay it serves. A frame for a device that is not up (yet: one end can
    come up and speak before the other) is dropped, as a cable to a switched-off port
    drops it (the kernel answers EIO)."""
    ways = {fd_a: (LinkDirection(spec, 0), fd_b), fd_b: (LinkDirection(spec, 1), fd_a)}
    due: list[tuple[int, int, int, bytes]] = []
    order = 0
    pending = b""
    clock = time.monotonic_ns
    while True:
        now = clock()
        while due and due[0][0] <= now:
            _, _, out_fd, frame = heapq.heappop(due)
            try:
                os.write(out_fd, frame)
            except OSError as exc:
                if not isinstance(exc, BlockingIOError) and exc.errno != errno.EIO:
                    raise
                ways[fd_a if out_fd == fd_b else fd_b][0].dropped += 1
        timeout = None if not due else max(due[0][0] - now, 0) / 1e9
        ready, _, _ = select.select([fd_a, fd_b, control], [], [], timeout)
        if control in ready:
            said = os.read(control, 4096)
            if not said:
                break
            pending += said
            *lines, pending = pending.split(b"\n")
            for line in lines:
                spec = _reconfigured(spec, line.decode(errors="replace"), ways)
        now = clock()
        for fd in ready:
            if fd == control:
                continue
            way, out_fd = ways[fd]
            while True:
                try:
                    frame = os.read(fd, MAX_FRAME)
                except BlockingIOError:
                    break
                at = way.admit(now, len(frame), tcp_ports(frame))
                if at is not None:
                    order += 1
                    heapq.heappush(due, (at, order, out_fd, frame))
    a, b = ways[fd_a][0], ways[fd_b][0]
    return {
        "a_to_b_forwarded": a.forwarded,
        "a_to_b_dropped": a.dropped,
        "b_to_a_forwarded": b.forwarded,
        "b_to_a_dropped": b.dropped,
    }


def _reconfigured(
    spec: LinkSpec, text: str, ways: dict[int, tuple[LinkDirection, int]]
) -> LinkSpec:
    try:
        spec = parse_link(text, spec, source="link control")
    except WskReplayError as exc:
        print(f"refused: {exc}", flush=True)
        return spec
    for way, _ in ways.values():
        way.reconfigure(spec)
    print("applied", flush=True)
    return spec


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(
            "usage: python -m wskreplay.replayer.link_forwarder TAP_A TAP_B SPEC", file=sys.stderr
        )
        return 2
    try:
        spec = parse_link(argv[2])
        fd_a, fd_b = open_tap(argv[0]), open_tap(argv[1])
    except WskReplayError as exc:
        print(f"wskreplay link: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    precise_sleeps()
    print("ready", flush=True)
    counts: dict[str, int] = forward(fd_a, fd_b, spec, sys.stdin.fileno())
    counts["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    print(json.dumps(counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
