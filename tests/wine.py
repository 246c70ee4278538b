"""A Wine prefix of its own with wskrtest.sys installed as a kernel service, and
wskreplay-agent.exe run in it (docs/testdriver.md, "What the Wine run checks").

Wine stops a prefix's services when its last program exits, so the prefix's wineserver is
kept persistent until :meth:`WineMachine.shutdown`, which also checks that nothing of the
prefix is left running.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.agent_client import TOKEN
from wskreplay.formats.agentwire import TOKEN_ENV

from .conftest import REPO

TESTDRIVER = REPO / "testdriver"
BUILD = TESTDRIVER / "build"
SERVICE = "wskrtest"


def build() -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-C", str(TESTDRIVER)], capture_output=True, text=True, timeout=300
    )


def build_probe(out: Path) -> Path:
    """tests/windows/ioctl_probe.c, with the agent's device layer."""
    exe = out / "ioctl_probe.exe"
    subprocess.run(
        ["x86_64-w64-mingw32-gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror",
         "-I", str(TESTDRIVER), str(REPO / "tests" / "windows" / "ioctl_probe.c"),
         str(TESTDRIVER / "agent_device.c"), "-o", str(exe), "-lws2_32", "-lntdll"],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return exe


class WineMachine:
    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.env = {
            **os.environ,
            "WINEPREFIX": str(prefix),
            "WINEDEBUG": "-all",
            "WINEDLLOVERRIDES": "mscoree,mshtml=d",
            TOKEN_ENV: TOKEN,
        }
        self.env.pop("DISPLAY", None)
        self.agents: list[subprocess.Popen] = []

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self._run(["wine", *args], timeout)

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Output goes through a file, not a pipe: the prefix's services, started by
        whichever program comes first, inherit its descriptors and keep a pipe open."""
        with tempfile.TemporaryFile() as out:
            proc = subprocess.run(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=timeout)  # fmt: skip
            out.seek(0)
            text = out.read().decode(errors="replace")
        return subprocess.CompletedProcess(cmd, proc.returncode, text, "")

    def boot(self) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        self._run(["wineboot", "-i"], 300)
        # services.exe of the booting prefix does not see services created before it
        # restarts (sc start then fails with 1060): a fresh server after the boot.
        self._run(["wineserver", "-k"], 60)
        self._run(["wineserver", "-w"], 60)
        self._run(["wineserver", "-p"], 60)
        drivers = self.prefix / "drive_c" / "windows" / "system32" / "drivers"
        shutil.copyfile(BUILD / "wskrtest.sys", drivers / "wskrtest.sys")
        path = r"C:\windows\system32\drivers\wskrtest.sys"
        self.run("sc", "create", SERVICE, "type=", "kernel", "binpath=", path)
        self.start_driver()

    def state(self) -> str:
        out = self.run("sc", "query", SERVICE).stdout
        m = re.search(r"STATE\s+:\s+\d+\s+(\w+)", out)
        return m.group(1) if m else out

    def start_driver(self) -> None:
        """Right after the prefix boots, services.exe may still hold its database lock
        (``sc start`` fails with 1055): tried again for a while."""
        deadline = time.monotonic() + 60
        while True:
            out = self.run("sc", "start", SERVICE).stdout
            if self.state() == "RUNNING":
                return
            assert time.monotonic() < deadline, out
            time.sleep(0.5)

    def stop_driver(self) -> str:
        self.run("sc", "stop", SERVICE)
        deadline = time.monotonic() + 30
        while self.state() != "STOPPED" and time.monotonic() < deadline:
            time.sleep(0.2)
        return self.state()

    def start_agent(self, *args: str) -> tuple[subprocess.Popen, tuple[str, int]]:
        proc = subprocess.Popen(
            ["wine", str(BUILD / "wskreplay-agent.exe"), "--listen", "127.0.0.1:0", *args],
            env=self.env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.agents.append(proc)
        line = proc.stderr.readline()
        m = re.search(r"listening on ([\d.]+):(\d+)", line)
        assert m, line
        return proc, (m.group(1), int(m.group(2)))

    def stop_agent(self, proc: subprocess.Popen) -> None:
        """``wine`` runs the program in its own process: killing it kills the agent."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def processes(self) -> list[str]:
        """Processes of this prefix still running (by their environment)."""
        left = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"WINEPREFIX={self.prefix}".encode() in environ.split(b"\0"):
                left.append(cmdline)
        return left

    def shutdown(self) -> None:
        for proc in self.agents:
            self.stop_agent(proc)
        self._run(["wineserver", "-k"], 60)
        deadline = time.monotonic() + 30
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
