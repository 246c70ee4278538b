"""The socket target: a trace's calls re-issued through real kernel TCP sockets.

Topologies (docs/targets.md):

- ``netns`` (default, needs root): two network namespaces created for the replay, the
  driver's side (192.0.2.1) and the peer's (192.0.2.2), joined by a link that applies the
  recorded path conditions (RTT, rate, loss; ``--link`` overrides). With ``sch_netem``
  the link is a veth pair with netem on both ends; without it (these kernels) two TAP
  devices joined by the user-space forwarder (:mod:`~wskreplay.replayer.link_forwarder`).
- ``loopback``: both ends on 127.0.0.1 in the current namespace, no conditions; the wire is
  captured when the capture is permitted (root), else the replay says it has no wire.

The peer is a process (:mod:`~wskreplay.replayer.socket_peer`) acting out each socket's
recorded peer; the wire is captured on the driver side's interface during the replay and
stored in the replayed trace. Everything set up is torn down when the replay ends, fails
or is interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from wskreplay.errors import TargetError
from wskreplay.formats import ntstatus as nt
from wskreplay.formats.agentwire import is_loopback
from wskreplay.formats.tcpip import TCP_RST
from wskreplay.policies import policies_of
from wskreplay.replayer import netns
from wskreplay.replayer.calibrate import estimate_path, inferred_profile, sender_mss
from wskreplay.replayer.capture import WireCapture, clock_offset_ns, read_wire
from wskreplay.replayer.engine import ReplayOptions, peer_reset_ns
from wskreplay.replayer.link import LinkSpec, keys_given, parse_link
from wskreplay.replayer.peer_script import peer_script
from wskreplay.replayer.profile import TransportProfile
from wskreplay.replayer.realtime import RealtimeOptions, RealtimeRun, replay_origin, run_calls
from wskreplay.replayer.replayed_streams import replayed_streams
from wskreplay.replayer.socket_peer import PeerConnection, write_plan
from wskreplay.replayer.targets.socket_session import OpenOptions, SocketSession
from wskreplay.trace.model import CallTable, Clock, Direction, SegmentTable, Stream, Trace

SENDER_ADDR, PEER_ADDR = "192.0.2.1", "192.0.2.2"
LOOPBACK = "127.0.0.1"
PEER_DEV = "wskr-peer"
"""The peer namespace's end of the link."""
PEER_READY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class SocketTargetOptions:
    topology: str = "netns"
    """``netns`` or ``loopback``."""
    link: str | None = None
    """Conditions overriding the recorded ones (``"delay=20ms loss=0.1%"``)."""
    settle_ns: int = 5_000_000_000
    keep_capture: Path | None = None
    """Where to keep the replay's wire capture (pcapng), if anywhere."""
    peer_host: str | None = None
    """Loopback topology: the address the peer listens on (an agent elsewhere must reach
    it); None: 127.0.0.1."""


@dataclass
class Topology:
    """Where the two ends live and how the wire is seen."""

    kind: str
    peer_host: str
    sender_ns: str | None = None
    peer_ns: str | None = None
    interface: str = "lo"
    link: LinkSpec = field(default_factory=LinkSpec)
    link_kind: str = "none"
    """``none`` (loopback), ``veth`` (no conditions), ``netem`` or ``tap-forwarder``."""
    forwarder: subprocess.Popen[str] | None = None
    can_capture: bool = True

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "socket",
            "topology": self.kind,
            "link": self.link.as_dict(),
            "link_kind": self.link_kind,
            "kernel": os.uname().release,
        }


def recorded_link(trace: Trace, seed: int) -> LinkSpec:
    """The recording's path conditions: its median RTT, bottleneck rate and loss."""
    paths = [estimate_path(trace, sid, seed) for sid in trace.sockets]
    if not paths:
        return LinkSpec(seed=seed)
    rates = [p.rate_bps for p in paths if p.rate_bps]
    return LinkSpec(
        delay_ns=int(np.median([p.rtt_ns for p in paths])),
        loss=float(np.median([p.loss for p in paths])),
        rate_bps=min(rates) if rates else None,
        seed=seed,
    )


def netem_available(ns: str) -> bool:
    probe = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem"]
    ok = subprocess.run(probe, capture_output=True, check=False).returncode == 0
    if ok:
        subprocess.run(
            ["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "lo", "root"],
            capture_output=True,
            check=False,
        )
    return ok


@contextmanager
def netns_topology(link: LinkSpec, *, per_socket_delays: bool = False) -> Iterator[Topology]:
    """The two namespaces and the link between them. A link that shapes nothing (an empty
    spec, no per-socket delays to come) is a plain veth pair: the kernel forwards, with no
    process between the ends and no qdisc, as on the link tcpreplay uses."""
    netns.require_root("--topology netns")
    netns.remove_stale()
    with ExitStack() as stack:
        s = stack.enter_context(netns.namespace("s"))
        r = stack.enter_context(netns.namespace("r"))
        topo = Topology("netns", PEER_ADDR, s, r, link=link)
        if link.empty and not per_socket_delays:
            _plain_veth(topo)
        elif netem_available(s):
            _veth_with_netem(topo)
        else:
            stack.enter_context(_tap_forwarder(topo))
        for ns, dev, addr in ((s, topo.interface, SENDER_ADDR), (r, PEER_DEV, PEER_ADDR)):
            netns.run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            netns.run("ip", "-n", ns, "link", "set", dev, "mtu", "1500", "up")
        yield topo


def _plain_veth(topo: Topology) -> None:
    assert topo.sender_ns is not None and topo.peer_ns is not None
    topo.interface, topo.link_kind = "wskr-drv", "veth"
    netns.run("ip", "link", "add", "wskr-drv", "netns", topo.sender_ns, "type", "veth",
              "peer", "name", PEER_DEV, "netns", topo.peer_ns)  # fmt: skip
    netns.run("ip", "netns", "exec", topo.sender_ns, "ethtool", "-K", "wskr-drv", "tso", "off",
              "gso", "off")  # fmt: skip


def _veth_with_netem(topo: Topology) -> None:
    assert topo.sender_ns is not None and topo.peer_ns is not None
    _plain_veth(topo)
    topo.link_kind = "netem"
    spec = topo.link
    if spec.empty:
        return
    args = []
    if spec.delay_ns:
        args += ["delay", f"{spec.delay_ns // 2000}us"]
        if spec.jitter_ns:
            args.append(f"{spec.jitter_ns // 1000}us")
    if spec.loss:
        args += ["loss", f"{spec.loss * 100:g}%"]
    if spec.reorder:
        args += ["reorder", f"{spec.reorder * 100:g}%"]
    if spec.rate_bps:
        args += ["rate", f"{spec.rate_bps}bit"]
    for ns, dev in ((topo.sender_ns, "wskr-drv"), (topo.peer_ns, PEER_DEV)):
        netns.run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem",
                  *args)  # fmt: skip


@contextmanager
def _tap_forwarder(topo: Topology) -> Iterator[None]:
    assert topo.sender_ns is not None and topo.peer_ns is not None
    tag = os.getpid() % 100_000
    tap_s, tap_r = f"wskr{tag}s", f"wskr{tag}r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wskreplay.replayer.link_forwarder", tap_s, tap_r,
         topo.link.text()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _ahead_of_other_work(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            err = proc.stderr.read().strip() if proc.stderr else ""
            raise TargetError(f"the link forwarder did not start: {err or line or 'no output'}")
        netns.run("ip", "link", "set", tap_s, "netns", topo.sender_ns, "name", "wskr-drv")
        netns.run("ip", "link", "set", tap_r, "netns", topo.peer_ns, "name", PEER_DEV)
        topo.interface, topo.link_kind, topo.forwarder = "wskr-drv", "tap-forwarder", proc
        yield
    finally:
        _stop_process(proc)


def _give_each_socket_its_rtt(topo: Topology, rtt_by_port: dict[int, int]) -> None:
    """The user-space link delays each socket's frames by that socket's recorded RTT
    (found by its peer port), not the median of all of them: a capture holding both LAN
    and Internet connections replays each at its own pace (docs/targets.md, "Topology")."""
    assert topo.forwarder is not None and topo.forwarder.stdin and topo.forwarder.stdout
    topo.link = replace(topo.link, port_delays=tuple(sorted(rtt_by_port.items())))
    topo.forwarder.stdin.write(topo.link.text() + "\n")
    topo.forwarder.stdin.flush()
    answer = topo.forwarder.stdout.readline().strip()
    if answer != "applied":
        raise TargetError(f"the link forwarder did not take the sockets' delays: {answer}")


PRIORITY_NICE = -10
"""The nice value of the replay's loop, the link forwarder and the peer (root only): they
are the driver, the network and the far host, and a replay on a shared machine must not
find them starved by other work (docs/targets.md, "Timing")."""


def _ahead_of_other_work(proc: subprocess.Popen[str]) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, proc.pid, PRIORITY_NICE)
    except OSError:
        pass  # not root: the loopback topology's peer runs at the usual priority


@contextmanager
def _this_process_ahead() -> Iterator[int]:
    """The replay's own loop at the forwarder's and peer's priority while it runs (root
    only; the processes started before, dumpcap among them, keep theirs); yields the nice
    value it runs at."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY_NICE)
    except OSError:
        yield before
        return
    try:
        yield PRIORITY_NICE
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


def _stop_process(proc: subprocess.Popen[str]) -> str:
    """Close its stdin (our stop signal), wait a little, kill if need be; its stdout."""
    out = ""
    try:
        out, _ = proc.communicate(input="", timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        proc.kill()
        try:
            out, _ = proc.communicate(timeout=5)
        except (ValueError, OSError, subprocess.TimeoutExpired):
            pass
    return out or ""


@contextmanager
def loopback_topology(link: LinkSpec) -> Iterator[Topology]:
    if not link.empty:
        raise TargetError("--link needs --topology netns (loopback has no conditions)")
    yield Topology("loopback", LOOPBACK, can_capture=os.geteuid() == 0)


RUN_LEAD_NS = 50_000_000
"""From the first connection the peer accepts to the replay's start (the trace's origin,
``realtime.replay_origin``): the peer counts what its recorded counterpart did before
receiving anything (a client's request, on the server side) from its accept, so those
actions are planned this much later, plus their recorded time from the origin."""


def peer_plan(trace: Trace, rtt: dict[int, int], speed: float | None) -> list[PeerConnection]:
    """Each socket's recorded peer as actions for the peer process (delays scaled)."""

    def scaled(ns: int) -> int:
        return 0 if speed is None else int(ns / speed)

    origin = replay_origin(trace)
    seg = trace.segments
    plans = []
    for sid in sorted(trace.sockets):
        script = peer_script(trace, sid, rtt[sid], policies_of(trace.metadata))
        mine = seg.column("time_ns")[seg.column("socket") == sid]
        opened = int(mine.min()) if len(mine) else origin
        actions: list[tuple[int, int, bytes, int]] = []
        window, ceiling = 0, -1
        if script is not None:
            ceiling = -1 if script.ack_ceiling is None else script.ack_ceiling
            incoming = trace.streams.get((sid, Direction.IN))
            recorded = incoming.length if incoming is not None else 0
            sent = 0
            for a in sorted(script.actions, key=lambda x: x.after):
                end = min(a.seq + a.length, recorded)
                data = b""
                if a.length and end > sent:
                    # A kernel socket is a byte stream: what the recorded peer resent is
                    # not sent twice, and bytes the capture missed go as zeros in place.
                    got = incoming.data[sent:end] if incoming and incoming.data else b""
                    data = bytes(got).ljust(end - sent, b"\0")
                    sent = end
                delay = scaled(a.delay_ns)
                if a.after <= 0:
                    delay = RUN_LEAD_NS + scaled(max(opened - origin, 0) + a.delay_ns)
                actions.append((a.after, delay, data, a.flags))
            window = max((w for _, w in script.windows), default=0)
        else:
            reset = peer_reset_ns(trace, sid)
            if reset is not None:
                calls = trace.calls
                mine = (calls.column("socket") == sid) & (calls.column("issue_ns") < reset)
                ok = np.array([nt.is_success(int(s)) for s in calls.column("status")[mine]], bool)
                sent = int(calls.column("length")[mine][ok].sum()) if len(ok) else 0
                actions.append((sent, 0, b"", TCP_RST))
        plans.append(PeerConnection(sid, 0, window, actions, ceiling))
    return plans


def _start_peer(
    topo: Topology, plans: list[PeerConnection], folder: Path
) -> tuple[subprocess.Popen[str], dict[int, int]]:
    plan_path = folder / "peer.plan"
    write_plan(plan_path, topo.peer_host, plans)
    cmd = netns.in_namespace(
        topo.peer_ns, sys.executable, "-m", "wskreplay.replayer.socket_peer", str(plan_path)
    )
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _ahead_of_other_work(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "ready":
        err = proc.stderr.read().strip() if proc.stderr else ""
        _stop_process(proc)
        raise TargetError(f"the peer process did not start: {err or 'no output'}")
    ports = [int(p) for p in line[1:]]
    return proc, {c.socket: port for c, port in zip(plans, ports, strict=True)}


SessionFactory = Callable[[TransportProfile], Any]
"""Makes the session the calls go to: a :class:`SocketSession` here, an agent's elsewhere."""


def replay_socket(
    trace: Trace,
    options: ReplayOptions,
    target: SocketTargetOptions,
    *,
    source_sha256: str = "",
    progress: Callable[[int, int], None] | None = None,
    session_factory: SessionFactory = SocketSession,
    describe: dict[str, Any] | None = None,
) -> Trace:
    """Replay every call through kernel sockets; the replayed trace (wire included).
    ``session_factory`` and ``describe`` let the agent target run the same replay with its
    calls made by an agent (``describe`` then replaces the target's description)."""
    profile = inferred_profile(trace, options.profile, options.completion)
    base = recorded_link(trace, options.seed) if target.topology == "netns" else LinkSpec()
    link = parse_link(target.link, base) if target.link else base
    if target.topology not in ("netns", "loopback"):
        raise TargetError(f"--topology {target.topology}: expected netns or loopback")
    paths = {sid: estimate_path(trace, sid, options.seed) for sid in trace.sockets}
    own_delays = "delay" not in keys_given(target.link or "")
    topology: Callable[[LinkSpec], AbstractContextManager[Topology]]
    if target.topology == "netns":
        per_socket = own_delays and any(p.rtt_ns for p in paths.values())
        topology = partial(netns_topology, per_socket_delays=per_socket)
    else:
        topology = loopback_topology
    with ExitStack() as stack:
        stack.enter_context(netns.terminating_raises())
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wskreplay-")))
        topo = stack.enter_context(topology(link))
        if target.peer_host and topo.kind == "loopback":
            topo.peer_host = target.peer_host
            if not is_loopback(target.peer_host):
                topo.interface = "any"
        plans = peer_plan(trace, {s: p.rtt_ns for s, p in paths.items()}, options.speed)
        peer, ports = _start_peer(topo, plans, folder)
        stack.callback(_stop_process, peer)
        if topo.forwarder is not None and own_delays:
            _give_each_socket_its_rtt(topo, {ports[s]: p.rtt_ns for s, p in paths.items()})
        capture_path = folder / "wire.pcapng"
        capture: WireCapture | None = None
        if topo.can_capture and trace.sockets:
            ports_filter = " or ".join(f"port {p}" for p in ports.values())
            capture = WireCapture(capture_path, topo.interface, f"tcp and ({ports_filter})",
                                  topo.peer_host, topo.sender_ns)  # fmt: skip
            stack.enter_context(capture)
        session = session_factory(profile)
        stack.callback(session.shutdown)
        local_ports = {}
        first_open = session.now()
        for sid, sock in sorted(trace.sockets.items()):
            category = sock.category if sock.category in ("connection", "stream") else "connection"
            local_ports[sid] = session.open(
                sid,
                topo.peer_host,
                ports[sid],
                OpenOptions(
                    category=category,
                    nagle=profile.tcp.nagle,
                    mss=sender_mss(trace, sid),
                    namespace=topo.sender_ns,
                ),
            )
        start = max(first_open + RUN_LEAD_NS, session.now() + 1_000_000)
        timing = RealtimeOptions(options.speed, target.settle_ns, start_ns=start)
        with _this_process_ahead() as nice:
            run = run_calls(trace, session, timing, progress)
        session.shutdown()
        received = session.received()
        peer_report = _stop_process(peer)
        offset = clock_offset_ns()
        if capture is not None:
            capture.__exit__(None, None, None)
        forwarder = _stop_process(topo.forwarder) if topo.forwarder is not None else ""
        wire = None
        if capture is not None:
            wire = read_wire(capture_path, local_ports, run.t0 - run.start_ns - offset, ports)
            if target.keep_capture is not None:
                shutil.copyfile(capture_path, target.keep_capture)
    description = topo.describe() if describe is None else dict(describe)
    description["nice"] = nice
    description["peer"] = _last_json(peer_report)
    if forwarder:
        description["link_counts"] = _last_json(forwarder)
    if wire is None:
        description["wire"] = "not captured (capturing on loopback needs root)"
    return assemble(trace, run, profile, description, wire, received, options, source_sha256)


def _last_json(text: str) -> Any:
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def assemble(
    trace: Trace,
    run: RealtimeRun,
    profile: TransportProfile,
    target: dict[str, Any],
    wire: Any,
    received: dict[int, bytes],
    options: ReplayOptions,
    source_sha256: str,
) -> Trace:
    """The replayed trace of a real-time run: the calls as they went, the streams and
    segments the wire carried (when captured), pacing in the metadata."""
    calls = trace.calls
    cols = calls.columns
    cols.update(run.columns)
    cols["stream_offset"] = np.zeros(len(calls), np.int64)
    socket_of = calls.column("socket").tolist()
    streams = replayed_streams(
        trace, socket_of, calls.column("length").tolist(), run.columns["status"].tolist(), cols
    )
    events = list(run.events)
    segments = SegmentTable.empty()
    if wire is not None:
        for key, stream in wire.streams.items():
            if key[1] is Direction.IN or key in streams:
                streams[key] = stream
        segments = wire.segments
        events += [e for e in wire.events if e.kind == "fin"]
    else:
        for sid, data in received.items():
            if data:
                streams[(sid, Direction.IN)] = Stream(sid, Direction.IN, len(data), bytearray(data))
    out = Trace(
        metadata={
            "source": "replay",
            "replay_of": source_sha256,
            "target": target,
            "profile": profile.as_dict(),
            "replay": {"speed": options.speed, "seed": options.seed, "origin_ns": run.t0},
            "completion_policy": {"policy": profile.completion.policy, "evidence": "replay"},
            "pacing": {
                **run.pacing(),
                "duration_ns": run.duration_ns,
                "lateness_ns": run.lateness_ns.tolist(),
            },
            "unfinished_calls": run.unfinished,
        },
        clock=Clock(trace.clock.zero_utc_ns, "monotonic"),
        sockets=dict(trace.sockets),
    )
    out.calls = CallTable(cols, calls.control_blob)
    out.streams = streams
    out.segments = segments
    out.events = sorted(events, key=lambda e: e.time_ns)
    return out
