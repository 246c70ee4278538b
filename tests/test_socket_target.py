"""The socket target on real kernel TCP: each shipped trace replayed through two network
namespaces and the user-space link, its wire captured, with tshark's own TCP reassembly
as the oracle for the bytes on the wire."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.reset_race import cut_by_reset, raced_reset
from tests.tshark_oracle import follow
from wskreplay.formats import ntstatus as nt
from wskreplay.formats.tcpip import TCP_RST
from wskreplay.generators.pacing_trace import pacing_trace
from wskreplay.replayer.engine import ReplayOptions
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.targets.socket import PRIORITY_NICE, SocketTargetOptions, replay_socket
from wskreplay.trace import read_trace, write_trace
from wskreplay.trace.model import Direction

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

ROOT = Path(__file__).resolve().parent.parent
NICE_BEFORE = os.getpriority(os.PRIO_PROCESS, 0)
"""This process's priority before any replay raised it."""
SPEEDS = {"field.wskt": 1.0, "sample.wskt": 1.0, "smb2-inferred.wskt": 20.0}
"""The SMB2 recording lasts 30 s: replayed 20 times faster."""


def tshark_fields(path: Path, *fields: str, filter_: str = "") -> list[list[str]]:
    cmd = ["tshark", "-r", str(path), "-T", "fields", *sum((["-e", f] for f in fields), [])]
    if filter_:
        cmd += ["-Y", filter_]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


@pytest.fixture(scope="module", params=sorted(SPEEDS))
def socket_replay(request, tmp_path_factory):
    name = request.param
    folder = tmp_path_factory.mktemp(name.split(".")[0])
    recorded = read_trace(ROOT / "traces" / name)
    options = ReplayOptions(load_profile("windows-tcpip"), speed=SPEEDS[name])
    pcap = folder / "wire.pcapng"
    replayed = replay_socket(recorded, options, SocketTargetOptions(keep_capture=pcap))
    return recorded, replayed, pcap


def test_every_accepted_byte_is_on_the_real_wire(socket_replay):
    """tshark's reassembly of each connection is, byte for byte, what the replayed calls
    the stack accepted handed it, which is the recorded stream (less the calls that raced
    the peer's reset, see RACE_NS: refused after it, or accepted and cut off by it)."""
    recorded, replayed, pcap = socket_replay
    syns = tshark_fields(pcap, "tcp.stream", filter_="tcp.flags.syn==1 && tcp.flags.ack==0")
    streams = sorted(int(s) for (s,) in syns)
    assert len(streams) == len(recorded.sockets)
    raced = [i for i in range(len(recorded.calls)) if raced_reset(recorded, replayed, i)]
    for index, sid in zip(streams, sorted(recorded.sockets), strict=True):
        wire = follow(str(pcap), index)
        sent = recorded.streams[(sid, Direction.OUT)]
        assert not sent.gaps
        accepted = b"".join(
            replayed.call_payload(i) or b""
            for i in range(len(replayed.calls))
            if replayed.calls[i].socket == sid and nt.is_success(replayed.calls[i].status)
        )
        assert wire.from_node0 == accepted == bytes(replayed.streams[(sid, Direction.OUT)].data)
        lost = sum(recorded.calls[i].length for i in raced if recorded.calls[i].socket == sid)
        lost += sum(
            recorded.calls[i].length - len(replayed.call_payload(i) or b"")
            for i in recorded.calls.rows_of(sid).tolist()
            if cut_by_reset(recorded, replayed, i)
        )
        assert len(accepted) + lost == sent.length, refusals(recorded, replayed, sid)
        assert accepted == bytes(sent.data[: len(accepted)]) or lost


def refusals(recorded, replayed, sid: int) -> list[str]:
    """The socket's calls that succeeded in one trace only or whose bytes are missing from
    the replayed wire, and its resets: what a failed byte count is about."""
    a, b = recorded.calls, replayed.calls
    lines = [
        f"call {i} ({a[i].length} bytes): {a[i].issue_ns} ns {nt.describe(a[i].status)} "
        f"recorded, {b[i].issue_ns} ns {nt.describe(b[i].status)} replayed, "
        f"raced {raced_reset(recorded, replayed, i)}"
        for i in recorded.calls.rows_of(sid).tolist()
        if nt.is_success(a[i].status) != nt.is_success(b[i].status)
        or (nt.is_success(b[i].status) and replayed.call_payload(i) is None)
    ]
    for name, trace in (("recorded", recorded), ("replayed", replayed)):
        lines += [f"{name} {e.kind} at {e.time_ns} ns" for e in trace.events if e.socket == sid]
    return lines


def test_returned_statuses_are_as_recorded(socket_replay):
    recorded, replayed, _ = socket_replay
    a, b = recorded.calls.column("status"), replayed.calls.column("status")
    differ = np.flatnonzero(a != b).tolist()
    assert all(raced_reset(recorded, replayed, i) for i in differ), differ


def test_completion_statuses_are_as_recorded_or_explained_by_the_wire(socket_replay):
    """Every completion status is the recorded one, except a send the recording saw
    reset while Linux's peer had acknowledged all of it before its RST (then on-ack
    completes it with success): the capture shows that ACK."""
    recorded, replayed, _ = socket_replay
    a, b = recorded.calls, replayed.calls
    for i in np.flatnonzero(a.column("completion_status") != b.column("completion_status")):
        if raced_reset(recorded, replayed, int(i)):
            continue
        call = a[int(i)]
        assert call.completion_status == nt.STATUS_CONNECTION_RESET
        assert b[int(i)].completion_status == nt.STATUS_SUCCESS
        seg = replayed.segments
        mine = (seg.column("socket") == call.socket) & (
            seg.column("direction") == int(Direction.IN)
        )
        rst = mine & (seg.column("flags") & TCP_RST != 0)
        before = mine & ~rst & (seg.column("time_ns") <= seg.column("time_ns")[rst].min())
        end = b[int(i)].stream_offset + call.length
        assert int(seg.column("ack")[before].max()) >= end
    assert (b.column("completed") == a.column("completed")).all()


def test_peer_reset_is_reproduced(socket_replay):
    recorded, replayed, _ = socket_replay
    recorded_resets = {
        e.socket for e in recorded.events if e.kind == "reset" and e.attrs.get("by") == "peer"
    }
    replayed_resets = {
        e.socket for e in replayed.events if e.kind == "reset" and e.attrs.get("by") == "peer"
    }
    assert replayed_resets == recorded_resets
    forced = recorded.calls.column("status") == nt.STATUS_FILE_FORCED_CLOSED
    assert forced.any() == bool(recorded_resets)
    assert (replayed.calls.column("status")[forced] == nt.STATUS_FILE_FORCED_CLOSED).all()


def test_segments_are_what_the_kernel_sent(socket_replay):
    """Segment sizes are the kernel's, read from the capture by tshark; none beyond the
    MSS the SYNs agreed (less the timestamp option)."""
    recorded, replayed, pcap = socket_replay
    rows = tshark_fields(pcap, "tcp.srcport", "tcp.len", filter_="ip.src==192.0.2.1 && tcp.len>0")
    sizes = sorted(int(n) for _, n in rows)
    seg = replayed.segments
    out = (seg.column("direction") == int(Direction.OUT)) & (seg.column("length") > 0)
    assert sorted(seg.column("length")[out].tolist()) == sizes
    mss = [
        int(m) for (m,) in tshark_fields(pcap, "tcp.options.mss_val", filter_="tcp.flags.syn==1")
    ]
    assert max(sizes) <= min(mss) - 12


def test_replayed_trace_records_pacing_and_target(socket_replay, tmp_path):
    recorded, replayed, _ = socket_replay
    write_trace(tmp_path / "r.wskt", replayed)
    back = read_trace(tmp_path / "r.wskt")
    pacing = back.metadata["pacing"]
    assert len(pacing["lateness_ns"]) == len(recorded.calls) == pacing["calls"]
    assert back.metadata["target"]["kind"] == "socket"
    assert back.metadata["target"]["link_kind"] in ("tap-forwarder", "netem")
    # The replay's loop and the link ran ahead of other work; this process is back to its
    # own priority afterwards.
    assert back.metadata["target"]["nice"] == PRIORITY_NICE
    if back.metadata["target"]["link_kind"] == "tap-forwarder":
        assert back.metadata["target"]["link_counts"]["nice"] == PRIORITY_NICE
    assert os.getpriority(os.PRIO_PROCESS, 0) == NICE_BEFORE
    issue = back.calls.column("issue_ns")
    done = back.calls.column("completed") == 1
    assert (back.calls.column("completion_ns")[done] >= issue[done]).all()


def test_loopback_topology_and_cli_summary(tmp_path):
    trace = pacing_trace(300, max_gap_ns=2_000_000)
    write_trace(tmp_path / "p.wskt", trace)
    proc = subprocess.run(
        [sys.executable, "-m", "wskreplay", "replay", str(tmp_path / "p.wskt"), "--target",
         "socket", "--topology", "loopback", "-o", str(tmp_path / "out.wskt")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "lateness (issue vs schedule)" in proc.stdout
    assert "p99" in proc.stdout
    out = read_trace(tmp_path / "out.wskt")
    assert out.metadata["target"]["topology"] == "loopback"
    assert bytes(out.streams[(0, Direction.OUT)].data) == bytes(
        trace.streams[(0, Direction.OUT)].data
    )
    assert len(out.segments) > 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--target", "bogus"], "--target bogus: expected emulator, socket or agent://HOST:PORT"),
        (["--target", "socket", "--link", "delay=fast"], "delay=fast: expected a number"),
        (
            ["--target", "socket", "--topology", "loopback", "--link", "loss=1%"],
            "--link needs --topology netns",
        ),
        (["--target", "socket", "--until", "3"], "--until steps through the emulator only"),
    ],
)
def test_bad_target_options_are_one_line_errors(tmp_path, args, says):
    proc = subprocess.run(
        [sys.executable, "-m", "wskreplay", "replay", str(ROOT / "traces" / "field.wskt"),
         "-o", str(tmp_path / "o.wskt"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


def test_compiled_real_time_loop_equals_the_python_modules(tmp_path):
    """setup.py compiles the real-time loop and the socket session with mypyc as well; the
    Python modules are the reference. A real recording replayed through the socket target
    with each gives the same statuses, completions and bytes on both sides (the times are
    the kernel's, different from run to run). Not the other shipped traces: their peer's
    reset races their last sends, and either outcome is right (docs/targets.md)."""
    import shutil

    import wskreplay.replayer.realtime as realtime
    import wskreplay.replayer.targets.socket_session as socket_session

    from .conftest import REPO, run_cli

    assert realtime.__file__.endswith(".so"), "the real-time loop was not compiled"
    assert socket_session.__file__.endswith(".so"), "the socket session was not compiled"
    pure = tmp_path / "pure"
    shutil.copytree(
        REPO / "wskreplay", pure / "wskreplay", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    for name in ("smb2-inferred.wskt",):
        args = ["replay", str(ROOT / "traces" / name), "--target", "socket",
                "--speed", str(SPEEDS[name])]  # fmt: skip
        compiled_out, pure_out = tmp_path / f"c-{name}", tmp_path / f"p-{name}"
        done = run_cli(*args, "-o", str(compiled_out))
        assert done.returncode == 0, done.stderr
        done = subprocess.run(
            [sys.executable, "-m", "wskreplay", *args, "-o", str(pure_out)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
            env={"PYTHONPATH": str(pure), "PATH": os.environ["PATH"]},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        compiled, reference = read_trace(compiled_out), read_trace(pure_out)
        for column in ("status", "completed", "completion_status", "information"):
            assert np.array_equal(compiled.calls.column(column), reference.calls.column(column)), (
                f"{name}: {column}"
            )
        assert sorted(compiled.streams) == sorted(reference.streams)
        for key, stream in compiled.streams.items():
            assert stream.data == reference.streams[key].data, f"{name}: stream {key}"


def test_link_none_replays_on_a_plain_veth(tmp_path):
    """``--link none``: the kernel's veth, no forwarder; the recorded statuses, and on the
    wire (tshark's reassembly) the recorded bytes both ways."""
    from .conftest import run_cli

    name = "smb2-inferred.wskt"
    recorded = read_trace(ROOT / "traces" / name)
    out, pcap = tmp_path / "o.wskt", tmp_path / "wire.pcapng"
    done = run_cli("replay", str(ROOT / "traces" / name), "--target", "socket",
                   "--link", "none", "--speed", str(SPEEDS[name]), "--pcap-out", str(pcap),
                   "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    replayed = read_trace(out)
    target = replayed.metadata["target"]
    assert target["link_kind"] == "veth" and "link_counts" not in target
    assert target["link"]["delay_ns"] == 0 and not target["link"]["port_delays"]
    for column in ("status", "completed", "completion_status", "information"):
        assert np.array_equal(recorded.calls.column(column), replayed.calls.column(column)), column
    wire = follow(str(pcap), 0)
    assert wire.from_node0 == bytes(recorded.streams[(0, Direction.OUT)].data)
    assert wire.from_node1 == bytes(recorded.streams[(0, Direction.IN)].data)
