"""The test driver and its agent end to end under Wine (docs/testdriver.md): the mingw
build, wskrtest.sys installed and started as a kernel service in a Wine prefix of its own,
wskreplay-agent.exe serving the agent protocol in front of it, and replays through them
of the shipped traces and a real capture, compared with the emulator call by call; the
driver's input checks; every refusal of the protocol; faults (the agent killed and the
driver stopped mid-replay); and a clean unload with nothing left running.

What Wine's WSK provider cannot carry is named, never hidden: each call whose statuses
differ from the emulator's must fall in one of the documented Wine behaviours
(:func:`wine_difference`)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests import wine
from tests.agent_client import (
    TOKEN,
    auth_without_the_token,
    check_via,
    check_with_a_changed_frame,
    replayed_handshake,
    still_serves,
    talk,
)
from tests.tshark_oracle import follow, stream_count
from wskreplay.formats import ntstatus as nt
from wskreplay.formats.agentwire import HEADER, TOKEN_ENV, encode
from wskreplay.recorder.importer import ImportOptions, import_sources
from wskreplay.replayer.engine import ReplayOptions, replay
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.targets.agent import AgentTargetOptions, replay_agent
from wskreplay.trace import read_trace
from wskreplay.trace.model import Direction, Trace

from .conftest import REPO, SHARED_DATA

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="capturing the replay's wire needs root"),
    pytest.mark.skipif(shutil.which("wine") is None, reason="Wine is installed by .ci/run"),
]

RACE_NS = 2_000_000
"""A call this close to its socket's recorded reset, or after it, races that reset."""
WINE_SEND = "WskSend (fallback: the provider has no WskSendEx)"
CONNECTION_RESET = 0xC000020D


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    built = wine.build()
    assert built.returncode == 0, built.stdout + built.stderr
    m = wine.WineMachine(tmp_path_factory.mktemp("wine") / "prefix")
    try:
        m.boot()
        yield m
    finally:
        m.shutdown()  # a boot that failed half-way leaves a persistent wineserver too


@pytest.fixture(scope="module")
def agent(machine):
    proc, address = machine.start_agent()
    yield address
    machine.stop_agent(proc)


def test_the_mingw_build_is_warning_free_and_native():
    """``make`` with -Wall -Wextra -Werror from clean: a native-subsystem driver and a
    console agent."""
    subprocess.run(["make", "-C", str(wine.TESTDRIVER), "clean"], check=True, capture_output=True)
    built = wine.build()
    assert built.returncode == 0, built.stdout + built.stderr
    assert "-Werror" in built.stdout
    for name, subsystem in (("wskrtest.sys", "NT native"), ("wskreplay-agent.exe", "Windows CUI")):
        dump = subprocess.run(
            ["x86_64-w64-mingw32-objdump", "-p", str(wine.BUILD / name)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert re.search(rf"Subsystem\s+\w+\s+\({subsystem}\)", dump), name


EXPECTED_PROBE = {
    "info-short-output": 0xC0000206,
    "clock-short-output": 0xC0000206,
    "unknown-ioctl": 0xC0000010,
    "open-short-input": 0xC0000206,
    "open-short-output": 0xC0000206,
    "open-bad-family": 0xC000000D,
    "open-unknown-flag": 0xC000000D,
    "open-family-mismatch": 0xC000000D,
    "open-bind-without-address": 0xC000000D,
    "send-short-input": 0xC0000206,
    "send-unknown-handle": 0xC0000008,
    "send-length-mismatch": 0xC000000D,
    "send-payload-over-limit": 0xC000000D,
    "send-control-over-limit": 0xC000000D,
    "send-control-shorter-than-header": 0xC000000D,
    "send-irql-above-dispatch": 0xC000000D,
    "send-too-many-mdl-pieces": 0xC000000D,
    "send-mdl-pieces-not-the-payload": 0xC000000D,
    "disconnect-unknown-handle": 0xC0000008,
    "close-unknown-handle": 0xC0000008,
    "wait-small-output": 0xC0000023,
    "open-listener": 0,
    "disconnect-bad-abortive": 0xC000000D,
    "send-valid": 0,
    "send-valid-returned-success-or-pending": 0,
    "close-valid": 0,
    "send-closed-handle": 0xC0000008,
    "close-closed-handle": 0xC0000008,
    "info-still-answers": 0,
    "wait-pends": nt.STATUS_PENDING,
    "wait-cancelled": 0xC0000120,
}


def test_the_driver_checks_every_ioctl_input(machine, tmp_path):
    """Every field out of range, short buffers, unknown and closed handles: each a status,
    and the driver still answers; a valid send reaches the peer and completes."""
    probe = wine.build_probe(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)
        proc = subprocess.Popen(
            ["wine", str(probe), str(listener.getsockname()[1])],
            env=machine.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            got = b""
            while len(got) < 8:
                got += conn.recv(8 - len(got))
            out, _ = proc.communicate(timeout=120)
    assert got == b"probe!!\n"
    seen = {}
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        if name != "send-completed":
            seen[name] = int(value, 16)
    assert seen == EXPECTED_PROBE
    assert "send-completed call=77 status=0x00000000 information=8" in out


def emulated(trace: Trace) -> Trace:
    return replay(trace, ReplayOptions(load_profile("windows-tcpip")))


def through_the_driver(trace: Trace, address, tmp_path) -> tuple[Trace, str]:
    capture = tmp_path / "wire.pcapng"
    token = tmp_path / "token"
    token.write_text(TOKEN)
    host, port = address
    replayed = replay_agent(
        trace,
        ReplayOptions(load_profile("windows-tcpip")),
        AgentTargetOptions(f"agent://{host}:{port}", str(token), keep_capture=capture),
    )
    return replayed, str(capture)


def wine_difference(expected: Trace, replayed: Trace, i: int) -> str | None:
    """Why call ``i`` of the Wine replay may differ from the emulator's, or None when it
    must not (docs/testdriver.md, "What the Wine run checks")."""
    e, r = expected.calls[i], replayed.calls[i]
    if (e.status, e.completion_status) == (r.status, r.completion_status):
        return "equal"
    driver = replayed.metadata["target"]["driver"]
    if e.control_info is not None and r.status == nt.STATUS_NOT_SUPPORTED:
        assert driver["send"] == WINE_SEND
        return "ControlInfo refused: WskSend fallback"
    if e.status == nt.STATUS_SUCCESS and r.status == nt.STATUS_PENDING:
        if r.completion_status == e.completion_status:
            return "Wine's WskSend pends"
    if e.status == nt.STATUS_NOT_SUPPORTED and r.completion_status == nt.STATUS_SUCCESS:
        return "Wine's WskSend ignores flags"
    resets = [ev.time_ns for ev in expected.events if ev.kind == "reset" and ev.socket == e.socket]
    if resets and e.issue_ns >= min(resets) - RACE_NS:
        if r.status in (nt.STATUS_SUCCESS, nt.STATUS_PENDING, nt.STATUS_FILE_FORCED_CLOSED) and (
            r.completion_status
            in (nt.STATUS_SUCCESS, CONNECTION_RESET, nt.STATUS_FILE_FORCED_CLOSED)
        ):
            return "the peer's reset, on Wine's timing"
    return None


def carried_bytes(recorded: Trace, replayed: Trace) -> dict[int, bytes]:
    """Each socket's bytes of the calls the replay completed whole, in its issue order."""
    out = {}
    for sid in recorded.sockets:
        calls = [i for i in range(len(recorded.calls)) if recorded.calls[i].socket == sid]
        calls.sort(key=lambda i: replayed.calls[i].issue_ns)
        parts = []
        for i in calls:
            c, r = recorded.calls[i], replayed.calls[i]
            if r.completion_status == nt.STATUS_SUCCESS and r.information == c.length:
                data = recorded.streams[(sid, c.direction)].data
                parts.append(bytes(data[c.stream_offset : c.stream_offset + c.length]))
        out[sid] = b"".join(parts)
    return out


def assert_like_the_emulator(recorded: Trace, replayed: Trace, capture: str) -> dict[str, int]:
    expected = emulated(recorded)
    reasons = {i: wine_difference(expected, replayed, i) for i in range(len(recorded.calls))}
    unexplained = [i for i, why in reasons.items() if why is None]
    assert not unexplained, [
        (i, hex(expected.calls[i].status), hex(replayed.calls[i].status)) for i in unexplained
    ]
    driver = replayed.metadata["target"]["driver"]
    assert driver["send"] == WINE_SEND and driver["fallback_sends"] > 0
    wanted = {b for b in carried_bytes(recorded, replayed).values() if b}
    followed = {follow(capture, k).from_node0 for k in range(stream_count(capture))}
    assert wanted <= followed, "tshark finds every carried call's bytes on the wire"
    for sid, data in carried_bytes(recorded, replayed).items():
        stream = replayed.streams.get((sid, Direction.OUT))
        assert (bytes(stream.data) if stream is not None else b"") == data
    counts: dict[str, int] = {}
    for why in reasons.values():
        counts[why] = counts.get(why, 0) + 1
    return counts


@pytest.mark.parametrize("name", ["field.wskt", "sample.wskt"])
def test_a_shipped_trace_replays_through_the_driver(agent, name, tmp_path):
    recorded = read_trace(REPO / "traces" / name)
    replayed, capture = through_the_driver(recorded, agent, tmp_path)
    counts = assert_like_the_emulator(recorded, replayed, capture)
    assert counts["equal"] >= len(recorded.calls) // 2, counts
    assert replayed.metadata["target"]["agent"].startswith("wskreplay-agent.exe")


def test_a_real_capture_replays_through_the_driver(agent, tmp_path):
    """A Windows DCE-RPC session (294 calls on several sockets), its client side."""
    path = next(SHARED_DATA.glob("*/zeek__dce-rpc_mapi.pcap"))
    recorded = import_sources(
        [str(path)], ImportOptions(infer_calls=True, side="client")
    ).materialised()
    replayed, capture = through_the_driver(recorded, agent, tmp_path)
    counts = assert_like_the_emulator(recorded, replayed, capture)
    assert counts["equal"] >= len(recorded.calls) // 2, counts


def one_line_exit_2(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def test_ipv6_which_wine_cannot_bind_is_reported(machine):
    proc, address = machine.start_agent("--allow-dest", "::1/128")
    try:
        one_line_exit_2(check_via(address, None, "field.wskt", "--peer-host", "::1"),
                        "WskBind", "0xC0000017")  # fmt: skip
        still_serves(address)
    finally:
        machine.stop_agent(proc)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--bogus"], ["unknown or incomplete option --bogus", "usage:"]),
        (["--allow-dest", "10.0.0.0/99"], ["--allow-dest 10.0.0.0/99"]),
        (["--listen", "nowhere"], ["--listen nowhere: expected HOST:PORT"]),
    ],
)
def test_the_agents_bad_arguments_are_one_line_and_exit_2(machine, args, words):
    proc = machine.run(str(wine.BUILD / "wskreplay-agent.exe"), *args)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("wskreplay-agent:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout
    for word in words:
        assert word in lines[0]


def test_a_wrong_token_is_refused(agent, tmp_path):
    replies = talk(agent, token="not-the-token-at-all")
    assert replies[-1]["code"] == "bad-token" and "agent did not prove" in replies[-1]["message"]
    (tmp_path / "token").write_text("wrong-token-wrong-token\n")
    one_line_exit_2(check_via(agent, tmp_path / "token"), "bad-token")
    challenge, answer = auth_without_the_token(agent)
    assert challenge["op"] == "challenge" and answer["code"] == "bad-token"
    still_serves(agent)


def test_a_replayed_handshake_and_a_changed_frame_are_refused(agent):
    replies = replayed_handshake(agent)
    assert [r["op"] for r in replies] == ["challenge", "error"]
    assert replies[-1]["code"] == "bad-token"
    one_line_exit_2(check_with_a_changed_frame(agent), "bad-mac")
    still_serves(agent)


def test_oversized_malformed_and_version_1_frames_are_refused(agent):
    assert talk(agent, raw=HEADER.pack(1 << 30))[-1]["code"] == "too-large"
    hello_v1 = {"op": "hello", "id": 1, "version": 1, "token": TOKEN, "profile": {}}
    refusal = talk(agent, token=None, raw=encode(hello_v1))[-1]
    assert refusal["code"] == "version" and "1" in refusal["message"] and "2" in refusal["message"]
    assert talk(agent, {"op": "nope", "id": 3})[-1]["code"] == "unknown-op"
    assert talk(agent, {"op": "open", "id": 3, "socket": "x"})[-1]["code"] == "malformed"
    still_serves(agent)


def test_destinations_outside_allow_dest_are_refused(machine):
    with socket.create_server(("127.0.0.2", 0)) as elsewhere:
        port = elsewhere.getsockname()[1]
        proc, address = machine.start_agent()
        try:
            refused = talk(address, {"op": "open", "id": 3, "socket": 0, "host": "127.0.0.2",
                                     "port": port})  # fmt: skip
            assert refused[-1]["code"] == "destination" and "127.0.0.2" in refused[-1]["message"]
        finally:
            machine.stop_agent(proc)
        proc, address = machine.start_agent("--allow-dest", "127.0.0.0/30")
        try:
            opened = talk(address, {"op": "open", "id": 3, "socket": 0, "host": "127.0.0.2",
                                    "port": port}, {"op": "bye"})  # fmt: skip
            assert [r["op"] for r in opened] == ["opened", "bye"]
        finally:
            machine.stop_agent(proc)


def slow_replay(address, out) -> subprocess.Popen:
    """``wskreplay replay`` of the sample at a hundredth of its speed: 3 s of calls."""
    host, port = address
    return subprocess.Popen(
        [sys.executable, "-m", "wskreplay", "replay", str(REPO / "traces" / "sample.wskt"),
         "--target", f"agent://{host}:{port}", "--speed", "0.01", "-o", str(out)],
        env={**os.environ, TOKEN_ENV: TOKEN}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_the_agent_killed_mid_replay(machine, tmp_path):
    proc, address = machine.start_agent()
    replayer = slow_replay(address, tmp_path / "out.wskt")
    time.sleep(2.0)
    assert replayer.poll() is None
    machine.stop_agent(proc)
    out, err = replayer.communicate(timeout=120)
    one_line_exit_2(subprocess.CompletedProcess([], replayer.returncode, out, err), "agent")
    assert not (tmp_path / "out.wskt").exists(), "no partial replay presented as whole"
    survivor, address = machine.start_agent()
    try:
        still_serves(address)
    finally:
        machine.stop_agent(survivor)


def test_the_driver_stopped_mid_replay(machine, tmp_path):
    proc, address = machine.start_agent()
    try:
        replayer = slow_replay(address, tmp_path / "out.wskt")
        time.sleep(2.0)
        assert machine.stop_driver() == "STOPPED"
        out, err = replayer.communicate(timeout=120)
        one_line_exit_2(subprocess.CompletedProcess([], replayer.returncode, out, err), "agent")
        assert not (tmp_path / "out.wskt").exists(), "no partial replay presented as whole"
    finally:
        machine.stop_agent(proc)
        machine.start_driver()


def test_the_driver_unloads_cleanly_and_nothing_is_left_running(machine, agent):
    still_serves(agent)
    for proc in machine.agents:
        machine.stop_agent(proc)
    assert machine.stop_driver() == "STOPPED"
    machine.shutdown()
    assert machine.processes() == []
