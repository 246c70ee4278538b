"""A socket-target replay stopped mid-way leaves nothing behind: namespaces, TAP and veth
devices, and the processes it started (link forwarder, peer, dumpcap)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wskreplay.replayer import netns

from .conftest import alive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

ROOT = Path(__file__).resolve().parent.parent


def namespaces_of(pid: int) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if f"-{pid}-" in line]


def start_replay(tmp_path: Path) -> tuple[subprocess.Popen, list[str], list[int]]:
    """A 30-second replay, once its namespaces exist and its peer and capture run in them."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wskreplay", "replay", str(ROOT / "traces" / "smb2-inferred.wskt"),
         "--target", "socket", "-o", str(tmp_path / "out.wskt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        names = namespaces_of(proc.pid)
        inside = [
            int(p)
            for ns in names
            for p in subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True
            ).stdout.split()
        ]
        if len(names) == 2 and len(inside) >= 2:
            time.sleep(1.0)
            forwarder = subprocess.run(
                ["pgrep", "-f", f"link_forwarder wskr{proc.pid % 100000}s"],
                capture_output=True, text=True,
            ).stdout.split()  # fmt: skip
            return proc, names, inside + [int(p) for p in forwarder]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the replay never set up its namespaces")


def assert_nothing_left(names: list[str], pids: list[int], tag: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in names if n in listed]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"wskr{tag}" not in links


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_replay_cleans_up(tmp_path, how):
    proc, names, pids = start_replay(tmp_path)
    assert len(pids) >= 3
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in err
    assert not (tmp_path / "out.wskt").exists()
    assert_nothing_left(names, pids, proc.pid % 100000)


def test_killed_replay_is_cleaned_up_by_the_next(tmp_path):
    """SIGKILL leaves the namespaces (nothing can run then); the forwarder and the peer
    stop on their own (their stdin closes), and the next replay's start removes the rest."""
    proc, names, pids = start_replay(tmp_path)
    proc.kill()
    proc.wait(timeout=10)
    assert set(namespaces_of(proc.pid)) == set(names)
    removed = netns.remove_stale()
    assert set(names) <= set(removed)
    assert_nothing_left(names, pids, proc.pid % 100000)
