"""The agent target against the reference agent (``wskreplay agent serve`` in a
subprocess): same results as the socket target, the version 2 handshake both ways, and
every refusal the protocol promises."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import msgpack
import pytest

from tests.agent_client import (
    PROFILE,
    ROOT,
    TOKEN,
    auth_without_the_token,
    check_via,
    check_with_a_changed_frame,
    replayed_handshake,
    still_serves,
    talk,
)
from tests.reset_race import cut_by_reset, raced_reset
from wskreplay.formats.agentwire import (
    CLIENT_SIDE,
    HEADER,
    TOKEN_ENV,
    Channel,
    client_handshake,
    encode,
    frame_tag,
    read_message,
)
from wskreplay.replayer import netns
from wskreplay.replayer.engine import ReplayOptions
from wskreplay.replayer.profile import load_profile
from wskreplay.replayer.targets.agent import AgentTargetOptions, replay_agent
from wskreplay.replayer.targets.socket import SocketTargetOptions, replay_socket
from wskreplay.trace import read_trace
from wskreplay.trace.model import Direction

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="capturing on loopback needs root")


def start_agent(*args: str, token: str = TOKEN):
    env = {**os.environ, TOKEN_ENV: token}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wskreplay", "agent", "serve", "--listen", "127.0.0.1:0", *args],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stderr.readline()
    m = re.search(r"listening on ([\d.]+):(\d+)", line)
    assert m, line
    return proc, (m.group(1), int(m.group(2)))


@pytest.fixture(scope="module")
def agent():
    """The reference agent on a free loopback port, with small in-flight limits."""
    proc, address = start_agent("--max-in-flight-calls", "64")
    yield address
    proc.terminate()
    proc.wait(timeout=10)


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
        for race in (raced_reset, cut_by_reset)
        if race(recorded, via_agent, i) or race(recorded, direct, i)
    }
    for column in ("status", "completion_status", "completed"):
        a, b, r = (t.calls.column(column).tolist() for t in (via_agent, direct, recorded))
        assert {i for i in range(len(r)) if not a[i] == b[i] == r[i]} <= raced
    for sid in recorded.sockets:
        key = (sid, Direction.OUT)
        x, y = via_agent.streams[key], direct.streams[key]
        pairs = enumerate(zip(x.data, y.data, strict=False))
        at = next((k for k, (p, q) in pairs if p != q), None)
        shown = f"{len(x.data)}/{len(y.data)} bytes, differ at {at}, gaps {x.gaps}/{y.gaps}"
        assert bytes(x.data) == bytes(y.data) or raced, shown
        assert bytes(recorded.streams[key].data).startswith(bytes(x.data))
    assert via_agent.metadata["target"]["kind"] == "agent"
    assert via_agent.metadata["target"]["clock_error_ns"] < 5_000_000


def test_wrong_token_is_refused_and_check_exits_2(agent, tmp_path):
    """The agent proves its token first: a client with another token finds the agent's
    proof wrong and stops there, before showing anything of its own."""
    replies = talk(agent, token="not-the-token-at-all")
    assert replies[-1]["code"] == "bad-token" and "agent did not prove" in replies[-1]["message"]
    (tmp_path / "token").write_text("wrong-token-wrong-token\n")
    proc = check_via(agent, tmp_path / "token")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "bad-token" in proc.stderr, proc.stderr
    still_serves(agent)


def test_a_client_that_cannot_tag_auth_is_refused(agent):
    """The client's half: an auth whose tag is not under the session key (a client that
    took the agent's challenge without the token) is refused with bad-token."""
    challenge, answer = auth_without_the_token(agent)
    assert challenge["op"] == "challenge" and len(challenge["proof"]) == 32
    assert answer["code"] == "bad-token"
    still_serves(agent)


def test_a_replayed_handshake_is_refused(agent):
    """The bytes of a whole good session, sent again on a new connection: the agent's
    nonce is new, so the recorded auth's tag is wrong."""
    replies = replayed_handshake(agent)
    assert [r["op"] for r in replies] == ["challenge", "error"]
    assert replies[-1]["code"] == "bad-token"
    still_serves(agent)


def test_a_frame_changed_on_the_way_is_refused(agent):
    """The agent refuses the changed frame's tag and ends the session; check exits 2
    naming it."""
    proc = check_with_a_changed_frame(agent)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "bad-mac" in proc.stderr, proc.stderr
    still_serves(agent)


def test_version_1_and_unknown_versions_are_refused_naming_both(agent):
    for version in (1, 99):
        replies = talk(agent, token=None, raw=encode(
            {"op": "hello", "id": 1, "version": version, "token": TOKEN, "profile": PROFILE}
        ))  # fmt: skip
        message = replies[-1]["message"]
        assert replies[-1]["code"] == "version" and f"{version}" in message and "2" in message
    still_serves(agent)


def test_destinations_outside_the_replayers_address_and_allow_dest_are_refused(tmp_path):
    """The replayer connects from 127.0.0.1: the agent opens connections to 127.0.0.1,
    refuses 127.0.0.2 and names, and opens 127.0.0.2 once --allow-dest names it."""
    with (
        socket.create_server(("127.0.0.2", 0)) as elsewhere,
        socket.create_server(("127.0.0.1", 0)) as here,
    ):
        proc, address = start_agent()
        try:
            ok = talk(address, {"op": "open", "id": 3, "socket": 0, "host": "127.0.0.1",
                                "port": here.getsockname()[1]}, {"op": "bye"})  # fmt: skip
            assert [r["op"] for r in ok] == ["opened", "bye"]
            for host in ("127.0.0.2", "localhost"):
                refused = talk(address, {"op": "open", "id": 3, "socket": 0, "host": host,
                                         "port": elsewhere.getsockname()[1]})  # fmt: skip
                assert refused[-1]["code"] == "destination" and host in refused[-1]["message"]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        proc, address = start_agent("--allow-dest", "127.0.0.2/32")
        try:
            ok = talk(address, {"op": "open", "id": 3, "socket": 0, "host": "127.0.0.2",
                                "port": elsewhere.getsockname()[1]}, {"op": "bye"})  # fmt: skip
            assert [r["op"] for r in ok] == ["opened", "bye"]
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_oversized_message_is_refused_before_it_is_read(agent):
    replies = talk(agent, raw=HEADER.pack(1 << 30))
    assert replies[-1]["code"] == "too-large"
    still_serves(agent)


def test_malformed_message_is_refused(agent):
    """A correctly tagged frame whose body is not a message map."""
    with socket.create_connection(agent, timeout=10) as s:
        channel = Channel(s, CLIENT_SIDE)
        client_handshake(channel, TOKEN, {"profile": PROFILE})
        body = msgpack.packb([1, 2, 3])
        tag = frame_tag(channel.key, CLIENT_SIDE, channel.sent, body)
        s.sendall(HEADER.pack(len(body) + 32) + body + tag)
        assert channel.receive()["code"] == "malformed"
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
        replies = talk(agent, opened, *sends)
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
                client_handshake(Channel(insider, CLIENT_SIDE), TOKEN, {"profile": PROFILE})
        finally:
            proc.terminate()
            proc.wait(timeout=10)
