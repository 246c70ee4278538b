from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from wskreplay.trace import write_trace
from wskreplay.trace.model import (
    CallTable,
    Clock,
    Direction,
    Event,
    Segment,
    SegmentTable,
    SendCall,
    Socket,
    Trace,
)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_TRACE = REPO / "traces" / "sample.wskt"


def run_cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the installed ``wskreplay`` executable, as a user would."""
    exe = Path(sys.executable).parent / "wskreplay"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "wskreplay"]
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "120"},
        timeout=300,
    )


def imported_captures(into: Path, names: Iterable[str]) -> list[Path]:
    """Captures of ``shared/data/replay`` imported with ``--infer-calls`` into ``into``."""
    out = []
    for name in names:
        path = into / f"{name}.wskt"
        proc = run_cli(
            "import", str(SHARED_DATA / "replay" / name), "--infer-calls", "-o", str(path)
        )
        assert proc.returncode == 0, proc.stderr
        out.append(path)
    return out


def run_measured(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``cmd`` under a fresh parent, so the peak RSS read (KiB, of the largest process
    it waited for, workers included) is this run's alone. It is read from outside:
    ``wskreplay`` ends with ``os._exit``, so nothing inside it could report it."""
    parent = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(p.returncode)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", parent, *cmd], capture_output=True, text=True, cwd=cwd,
        timeout=timeout, env=env,
    )  # fmt: skip
    *lines, peak = proc.stderr.rstrip("\n").split("\n")
    proc.stderr = "\n".join(lines) + ("\n" if lines else "")
    return proc, int(peak)


def process_state(pid: int) -> str:
    """A process's state letter from ``/proc`` (R, S, D, Z...), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    return process_state(pid) not in ("Z", "gone")


def children_of(pid: int) -> list[int]:
    """The processes ``pid`` has forked and not yet reaped (its threads come and go)."""
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return children
    for task in tasks:
        try:
            children += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return children


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def tiny_trace() -> Trace:
    """Twelve calls on two sockets with short payloads, a segment per call, two events."""
    calls, segments = [], []
    position = {0: 0, 1: 0}
    for i in range(12):
        sock, n = i % 2, 5 + 3 * i
        calls.append(
            SendCall(
                seq=i,
                socket=sock,
                issue_ns=1000 * i,
                return_ns=1000 * i + 50,
                flags=2 if i % 3 == 0 else 0,
                offset=0,
                length=n,
                control_info=b"\x10\0\0\0" if i == 4 else None,
                status=0x103,
                completion_ns=1000 * i + 400,
                completion_status=0,
                information=n,
                irp=0xFFFF800000000000 + 0x100 * i,
                irql=0,
                stream_offset=position[sock],
            )
        )
        segments.append(
            Segment(sock, 1000 * i + 100, Direction.OUT, position[sock], n, 0x18, 0, 65535)
        )
        position[sock] += n
    trace = Trace(metadata={"source": "tiny"}, clock=Clock(1_700_000_000_000_000_000, "synthetic"))
    trace.sockets = {
        s: Socket(
            s,
            local_addr="192.0.2.1",
            local_port=50000 + s,
            remote_addr="198.51.100.1",
            remote_port=445,
        )
        for s in (0, 1)
    }
    trace.calls = CallTable.from_calls(calls)
    trace.segments = SegmentTable.from_segments(segments)
    for sock, n in position.items():
        stream = trace.stream(sock, Direction.OUT)
        stream.data = bytearray(hashlib.shake_256(bytes([sock])).digest(n))
        stream.length = n
    trace.events = [Event(11_000, "disconnect", 0), Event(12_000, "close", 0, {"why": "done"})]
    return trace


@pytest.fixture(scope="session")
def small_trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~2.5 KB trace with blocks of every kind: 3 calls a block, 40-byte stream chunks."""
    path = tmp_path_factory.mktemp("small") / "small.wskt"
    write_trace(path, tiny_trace(), block_rows=3, stream_chunk=40)
    return path


def pytest_sessionstart(session) -> None:
    """The emulator's modules may be compiled (setup.py, mypyc); a compiled module older
    than its source would test the old code. Refuse to run on a stale build."""
    stale = [
        str(so.relative_to(REPO))
        for so in (REPO / "wskreplay" / "replayer").rglob("*.so")
        if (source := so.parent / (so.name.split(".")[0] + ".py")).exists()
        and source.stat().st_mtime > so.stat().st_mtime
    ]
    if stale:
        raise pytest.UsageError(
            f"compiled modules older than their source: {', '.join(stale)}; "
            "rebuild with `pip install -e .` (or delete the .so files)"
        )
