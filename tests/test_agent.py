"""The agent target against the reference agent (``wskreplay agent serve`` in a
subprocess): same results as the socket target, and every refusal the protocol promises."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from tests.reset_race import raced_reset
from wskreplay.agent.protocol import HEADER, TOKEN_ENV, VERSION, encode, read_message
from wskreplay.model import Direction
from wskreplay.replayer import netns
from wskreplay.replayer.engine import ReplayOptions
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.targets.agent import AgentTargetOptions, replay_agent
from wskreplay.replayer.targets.socket import SocketTargetOptions, replay_socket
from wskreplay.tracefile import read_trace

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="capturing on loopback needs root")

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
PROFILE = {k: v for k, v in load_profile("windows-tcpip").as_dict().items() if k != "source"}


@pytest.fixture(scope="module")
def agent():
    """The reference agent on a free loopback port, with small in-flight limits."""
    env = {**os.environ, TOKEN_ENV: TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wskreplay", "agent", "serve", "--listen", "127.0.0.1:0",
         "--max-in-flight-calls", "64"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stderr.readline()
    m = re.search(r"listening on ([\d.]+):(\d+)", line)
    assert m, line
    yield m.group(1), int(m.group(2))
    proc.terminate()
    proc.wait(timeout=10)


def talk(address, *messages, raw: bytes | None = None):
    """Send ``messages`` (or ``raw`` bytes), return every reply until the agent closes."""
    with socket.create_connection(address, timeout=10) as s:
        if raw is not None:
            s.sendall(raw)
        for m in messages:
            s.sendall(encode(m))
        replies = []
        try:
            while True:
                replies.append(read_message(s))
        except Exception:  # noqa: BLE001 - the agent closing ends the conversation
            pass
        return replies


def hello(token=TOKEN, version=VERSION):
    return {"op": "hello", "version": version, "token": token, "profile": PROFILE, "id": 1}


def still_serves(address):
    replies = talk(address, hello(), {"op": "bye"})
    assert [r["op"] for r in replies] == ["hello", "bye"]


@pytest.mark.parametrize("name", ["field.wskt", "sample.wskt"])
def test_agent_gives_the_socket_targets_results(agent, name, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    recorded = read_trace(ROOT / "traces" / name)
    options = ReplayOptions(load_profile("windows-tcpip"))
    host, port = agent
    via_agent = replay_agent(recorded, options, AgentTargetOptions(f"agent://{host}:{port}"))
    direct = replay_socket(recorded, options, SocketTargetOptions(topology="loopback"))
    raced = {
        i
        for i in range(len(recorded.calls))
        if raced_reset(recorded, via_agent, i) or raced_reset(recorded, direct, i)
    }
    for column in ("status", "completion_status", "completed"):
        a, b, r = (t.calls.column(column).tolist() for t in (via_agent, direct, recorded))
        assert {i for i in range(len(r)) if not a[i] == b[i] == r[i]} <= raced
    for sid in recorded.sockets:
        key = (sid, Direction.OUT)
        assert bytes(via_agent.streams[key].data) == bytes(direct.streams[key].data) or raced
        assert bytes(recorded.streams[key].data).startswith(bytes(via_agent.streams[key].data))
    assert via_agent.metadata["target"]["kind"] == "agent"
    assert via_agent.metadata["target"]["clock_error_ns"] < 5_000_000


def test_wrong_token_is_refused_and_check_exits_2(agent, tmp_path):
    replies = talk(agent, hello(token="not-the-token-at-all"))
    assert replies[-1]["op"] == "error" and replies[-1]["code"] == "bad-token"
    host, port = agent
    (tmp_path / "token").write_text("wrong-token-wrong-token\n")
    proc = subprocess.run(
        [sys.executable, "-m", "wskreplay", "check", str(ROOT / "traces" / "field.wskt"),
         "--target", f"agent://{host}:{port}", "--token-file", str(tmp_path / "token")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "bad-token" in proc.stderr, proc.stderr
    still_serves(agent)


def test_unknown_version_is_refused(agent):
    replies = talk(agent, hello(version=99))
    assert replies[-1]["code"] == "version" and "99" in replies[-1]["message"]
    still_serves(agent)


def test_oversized_message_is_refused_before_it_is_read(agent):
    replies = talk(agent, raw=HEADER.pack(1 << 30))
    assert replies[-1]["code"] == "too-large"
    still_serves(agent)


def test_malformed_message_is_refused(agent):
    body = msgpack.packb([1, 2, 3])
    replies = talk(agent, raw=HEADER.pack(len(body)) + body)
    assert replies[-1]["code"] == "malformed"
    still_serves(agent)


def test_a_flood_of_in_flight_sends_is_refused(agent):
    """Sends that cannot complete (nobody reads: a listener that never accepts, its receive
    buffer the kernel's smallest) pile up; the 65th in flight is refused with the agent's
    limit of 64."""
    with socket.socket() as sink:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sink.bind(("127.0.0.1", 0))
        sink.listen(1)
        port = sink.getsockname()[1]
        opened = {"op": "open", "id": 2, "socket": 0, "host": "127.0.0.1", "port": port}
        sends = [
            {"op": "send", "id": 3 + i, "socket": 0, "irp": i + 1, "flags": 0,
             "payload": b"x" * 16000, "control_info": None, "irql": None, "at_once": False}
            for i in range(200)
        ]  # fmt: skip
        replies = talk(agent, hello(), opened, *sends)
    assert replies[-1]["op"] == "error" and replies[-1]["code"] == "in-flight"
    assert sum(r["op"] == "sent" for r in replies) == 64
    still_serves(agent)


def test_a_non_loopback_client_is_refused_when_bound_to_loopback():
    """In a namespace of its own: an agent bound to 127.0.0.1, and a client whose socket is
    bound to a non-loopback address of that namespace (a veth end's)."""
    with netns.namespace("agent") as ns:
        netns.run("ip", "-n", ns, "link", "add", "wskr-a", "type", "veth", "peer", "name", "wskr-b")
        netns.run("ip", "-n", ns, "addr", "add", "192.0.2.77/24", "dev", "wskr-a")
        netns.run("ip", "-n", ns, "link", "set", "wskr-a", "up")
        proc = subprocess.Popen(
            netns.in_namespace(ns, sys.executable, "-m", "wskreplay", "agent", "serve",
                               "--listen", "127.0.0.1:0"),
            env={**os.environ, TOKEN_ENV: TOKEN}, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            m = re.search(r"listening on ([\d.]+):(\d+)", proc.stderr.readline())
            assert m
            address = (m.group(1), int(m.group(2)))
            with netns.entered(ns):
                outsider = socket.socket()
                insider = socket.socket()
            with outsider:
                outsider.bind(("192.0.2.77", 0))
                outsider.settimeout(10)
                outsider.connect(address)
                reply = read_message(outsider)
            assert reply["code"] == "not-loopback" and "192.0.2.77" in reply["message"]
            with insider:
                insider.settimeout(10)
                insider.connect(address)
                insider.sendall(encode(hello()))
                assert read_message(insider)["op"] == "hello"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
