"""`wskreplay replay --target emulator` on the shipped traces (work in progress: issue 6)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from wskreplay.formats import ntstatus as nt
from wskreplay.replayer.engine import LATEST_TIME_NS
from wskreplay.trace import read_trace, write_trace
from wskreplay.trace.model import CallTable, Direction

from .conftest import REPO, assert_one_line_error, run_cli

TRACES = REPO / "traces"


def replayed(tmp_path, name: str, *args: str):
    out = tmp_path / f"{name}.replayed.wskt"
    proc = run_cli("replay", str(TRACES / name), "-o", str(out), *args)
    assert proc.returncode == 0, proc.stderr
    return read_trace(TRACES / name), read_trace(out), out


def test_replay_is_deterministic_and_says_what_it_replayed(tmp_path):
    _a, first, path = replayed(tmp_path, "sample.wskt")
    again = tmp_path / "again.wskt"
    assert run_cli("replay", str(TRACES / "sample.wskt"), "-o", str(again)).returncode == 0
    assert path.read_bytes() == again.read_bytes()
    source = hashlib.sha256((TRACES / "sample.wskt").read_bytes()).hexdigest()
    assert first.metadata["replay_of"] == source
    assert first.metadata["target"] == {"kind": "emulator"}
    assert first.metadata["profile"]["name"] == "windows-tcpip"


SHIPPED = sorted(p.name for p in TRACES.glob("*.wskt"))
COMPLETION_TOLERANCE_NS = 25_000
COMPLETION_TOLERANCE_REL = 0.02
"""docs/emulator.md, "Completion times": the model takes one median per socket where the
recording has a per-call value (the sender's delay to the wire, the ACK-to-completion
time); their spread in the shipped traces is at most about 25 us."""


def wire_coverage(trace, sid: int) -> list[tuple[int, int]]:
    """Union of the stream ranges the outbound segments of ``sid`` carried."""
    seg = trace.segments
    rows = (
        (seg.column("socket") == sid)
        & (seg.column("direction") == int(Direction.OUT))
        & (seg.column("length") > 0)
    )
    ranges = sorted(
        (int(q), int(q + n))
        for q, n in zip(seg.column("seq")[rows], seg.column("length")[rows], strict=True)
    )
    merged: list[list[int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_trace_replays_with_its_statuses_bytes_and_completion_times(tmp_path, name):
    recorded, replay, _ = replayed(tmp_path, name)
    for column in ("status", "completion_status", "completed", "information"):
        assert np.array_equal(recorded.calls.column(column), replay.calls.column(column)), column
    for (sid, direction), stream in recorded.streams.items():
        if direction != Direction.OUT:
            continue
        again = replay.streams[(sid, Direction.OUT)]
        assert (again.length, again.data, again.gaps) == (stream.length, stream.data, stream.gaps)
        if stream.length and (recorded.segments.column("socket") == sid).any():
            assert wire_coverage(replay, sid) == [(0, stream.length)]
    pending = (recorded.calls.column("status") == nt.STATUS_PENDING) & (
        recorded.calls.column("completed") == 1
    )
    assert pending.sum() >= 9

    def latency(trace):
        calls = trace.calls
        return (calls.column("completion_ns") - calls.column("issue_ns")).astype(np.int64)[pending]

    expected, got = latency(recorded), latency(replay)
    allowed = COMPLETION_TOLERANCE_NS + COMPLETION_TOLERANCE_REL * expected
    late = np.flatnonzero(np.abs(got - expected) > allowed)
    assert not len(late), [
        (int(np.flatnonzero(pending)[k]), int(expected[k]), int(got[k])) for k in late[:5]
    ]


def test_field_recording_contract_cases(tmp_path):
    recorded, replay, _ = replayed(tmp_path, "field.wskt")
    assert replay.metadata["peers"] == {"0": "recorded", "1": "recorded"}
    statuses = {r.status for r in replay.calls}
    assert {nt.STATUS_SUCCESS, nt.STATUS_NOT_SUPPORTED, nt.STATUS_FILE_FORCED_CLOSED} <= statuses
    control = [r for r in replay.calls if r.control_info]
    assert control and all(r.status == nt.STATUS_PENDING for r in control)
    profile = replay.metadata["profile"]
    assert profile["send"]["control_info_accepted"] == [[0, 3]]
    assert profile["completion"]["immediate_success"] == "as-recorded"
    assert profile["completion"]["latency_ns"] == 4000  # the recorded median, ACK to completion
    for i, call in enumerate(replay.calls):
        if nt.is_success(call.status):
            assert replay.call_payload(i) == recorded.call_payload(i)


def test_immediate_success_needs_the_recording_under_other_policies(tmp_path):
    """With ``immediate_success = when-complete-at-once`` the on-ack model cannot complete a
    send before the peer's ACK: the recorded immediate successes pend (docs/emulator.md)."""
    profile = tmp_path / "strict.toml"
    profile.write_text('[completion]\nimmediate_success = "when-complete-at-once"\n')
    recorded, replay, _ = replayed(tmp_path, "field.wskt", "--profile", str(profile))
    differ = [
        c.seq for c, r in zip(recorded.calls, replay.calls, strict=True) if c.status != r.status
    ]
    assert differ == [3] and recorded.calls[3].status == nt.STATUS_SUCCESS
    assert replay.calls[3].status == nt.STATUS_PENDING


def test_inferred_smb2_trace_replays_through_the_recorded_peer(tmp_path):
    recorded, replay, _ = replayed(tmp_path, "smb2-inferred.wskt")
    assert replay.metadata["peers"] == {"0": "recorded"}
    received = replay.streams[(0, Direction.IN)]
    assert received.data == recorded.streams[(0, Direction.IN)].data[: received.length]
    assert received.length == recorded.streams[(0, Direction.IN)].length


def test_asap_never_issues_later_than_the_timed_replay(tmp_path):
    _recorded, timed, _ = replayed(tmp_path, "sample.wskt")
    _recorded, asap, _ = replayed(tmp_path, "sample.wskt", "--asap")
    assert (asap.calls.column("issue_ns") <= timed.calls.column("issue_ns")).all()
    assert asap.calls.column("issue_ns").max() < timed.calls.column("issue_ns").max()


def test_bad_replay_input_is_one_line(tmp_path):
    out = str(tmp_path / "x.wskt")
    assert_one_line_error(
        run_cli("replay", str(TRACES / "field.wskt"), "-o", out, "--profile", "linux"),
        "no profile named 'linux'",
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[tcp]\nmss = 0\n")
    assert_one_line_error(
        run_cli("replay", str(TRACES / "field.wskt"), "-o", out, "--profile", str(bad)),
        "bad.toml",
        "[tcp] mss must be a positive integer",
    )
    assert_one_line_error(run_cli("replay", str(TRACES / "field.etl"), "-o", out), "field.etl")


def test_until_stops_after_a_call_and_shows_its_socket(tmp_path):
    proc = run_cli("replay", str(TRACES / "field.wskt"), "--until", "9")
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)
    assert (state["seq"], state["socket"]) == (9, 0)
    assert 9 in state["wsk"]["outstanding_calls"]
    tcp = state["tcp"]
    # Its bytes are on their way to TCP (the host's recorded delay) or with TCP.
    assert state["wsk"]["in_host_stack"] + tcp["in_flight"] + tcp["queued_unsent"] >= 5000
    assert {"cwnd", "peer_window", "rto_ns"} <= set(state["tcp"])
    assert_one_line_error(
        run_cli("replay", str(TRACES / "field.wskt"), "--until", "99"), "calls 0..11"
    )
    assert_one_line_error(run_cli("replay", str(TRACES / "field.wskt")), "-o OUT.wskt")


def test_recorded_times_past_the_replay_s_limit_are_refused(tmp_path):
    """The emulator's unarmed timers are 2**62 - 1 ns: a trace whose times run past
    3 * 2**60 ns after its clock's zero is refused in one line naming it, by replay and
    check; one just inside the limit replays."""
    for late, refused in ((LATEST_TIME_NS, False), (LATEST_TIME_NS + 1, True)):
        trace = read_trace(TRACES / "field.wskt")
        columns = trace.calls.columns
        columns["issue_ns"] = columns["issue_ns"].copy()
        columns["issue_ns"][-1] = late
        trace.calls = CallTable(columns, trace.calls.control_blob)
        path = tmp_path / f"late-{late}.wskt"
        write_trace(path, trace)
        for cmd in (["replay", str(path), "-o", str(tmp_path / "out.wskt")], ["check", str(path)]):
            proc = run_cli(*cmd)
            if refused:
                assert_one_line_error(proc, path.name, "past the replay's limit")
            else:
                assert proc.returncode in (0, 1), proc.stderr


def test_compiled_emulator_is_in_use_and_equals_the_python_modules(tmp_path):
    """setup.py compiles the emulator with mypyc; the Python modules are the reference.
    Both replay the shipped traces and a 5,000-call synth trace to the same bytes (the
    pure-Python run uses a copy of the package without compiled modules)."""
    import shutil
    import subprocess
    import sys

    import wskreplay.replayer.engine as engine

    assert engine.__file__.endswith(".so"), "the emulator was not compiled (see setup.py)"
    pure = tmp_path / "pure"
    shutil.copytree(
        REPO / "wskreplay", pure / "wskreplay", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    larger = tmp_path / "synth-5000.wskt"
    assert run_cli("synth", "-o", str(larger), "--calls", "5000", "--sockets", "6").returncode == 0
    for source in [TRACES / name for name in SHIPPED] + [larger]:
        name = source.name
        compiled_out, pure_out = tmp_path / f"c-{name}", tmp_path / f"p-{name}"
        assert run_cli("replay", str(source), "-o", str(compiled_out)).returncode == 0
        proc = subprocess.run(
            [sys.executable, "-m", "wskreplay", "replay", str(source), "-o", str(pure_out)],
            capture_output=True,
            text=True,
            env={"PYTHONPATH": str(pure), "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert compiled_out.read_bytes() == pure_out.read_bytes(), name


def test_a_finished_replay_leaves_nothing_for_the_cyclic_collector():
    """A replay's state (its connections, the calls' inputs and outputs, the wire) is freed
    by reference counting as the replay returns: nothing of it waits, in a reference cycle,
    for the cyclic collector (closures over the replay's generator frame did: 0.17 s of
    collection after a 300,000-call replay)."""
    import gc

    from wskreplay.replayer.engine import ReplayOptions, replay
    from wskreplay.replayer.profile import load_profile
    from wskreplay.trace import read_trace

    trace = read_trace(TRACES / "sample.wskt")
    options = ReplayOptions(load_profile(), speed=None)
    gc.collect()
    gc.disable()
    try:
        before = {id(o) for o in gc.get_objects()}
        replayed = replay(trace, options)
        left = [
            type(o).__qualname__
            for o in gc.get_objects()
            if id(o) not in before and type(o).__module__.startswith("wskreplay.replayer")
        ]
    finally:
        gc.enable()
    assert len(replayed.calls) == len(trace.calls)
    assert left == []
