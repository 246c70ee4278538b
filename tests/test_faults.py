"""Fault injection while writing traces: SIGKILL of ``wskreplay import`` and of the
recorder's journal writer at random points, a full disk, and readers of a file still being
written. The oracle is the file the same run writes when nothing goes wrong: imports are
deterministic, so a killed file must be a byte prefix of it, and every block of it that
ends inside the killed file must come back from ``recover``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from wskreplay.formats.wskt import BlockType, WsktFile
from wskreplay.generators import fieldsim
from wskreplay.recorder.etw_schema import read_recorder_events
from wskreplay.recorder.journal import read_journal
from wskreplay.trace import TraceReader, recover, verify

from .conftest import REPO, assert_one_line_error, run_cli

KILLS = 16
WSKREPLAY = [sys.executable, "-m", "wskreplay"]


@dataclass(frozen=True)
class Block:
    offset: int
    type: int
    head: bytes
    stored: bytes

    @property
    def end(self) -> int:
        return self.offset + len(self.head) + len(self.stored)


def blocks_of(path: Path, *, scan: bool = False) -> list[Block]:
    """Every data block of a file (META, CALLS, STREAM, ...; not INDEX), by its index when
    intact, else by scanning."""
    with TraceReader(path, mode="scan" if scan else "index") as reader:
        refs = [b.ref for b in reader.blocks if b.ref.type != BlockType.INDEX]
        return [Block(r.offset, r.type, *reader.file.raw_block(r)) for r in refs]


def same_data_blocks(recovered: Path, expected: list[Block]) -> None:
    """``recovered`` (a recover output, its own META block first) holds exactly the data
    blocks of ``expected`` after their META block, byte for byte."""
    got = [b for b in blocks_of(recovered) if b.type != BlockType.META]
    want = [b for b in expected if b.type != BlockType.META]
    assert [(b.type, b.stored) for b in got] == [(b.type, b.stored) for b in want]


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    """A 30,000-packet capture of many connections (27 MB): its import writes ~100 blocks."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from gen_capture import generate

    path = tmp_path_factory.mktemp("faults") / "capture.pcap"
    generate(str(path), packets=30_000, seed=3)
    return path


@pytest.fixture(scope="module")
def full_import(capture, tmp_path_factory) -> tuple[bytes, list[Block]]:
    out = tmp_path_factory.mktemp("full") / "out.wskt"
    subprocess.run(
        [*WSKREPLAY, "import", str(capture), "--infer-calls", "-o", str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out.read_bytes(), blocks_of(out)


def _kill_when(proc: subprocess.Popen, path: Path, size: int, deadline_s: float) -> None:
    """SIGKILL ``proc`` once ``path`` holds at least ``size`` bytes (0: at once)."""
    end = time.monotonic() + deadline_s
    while size and time.monotonic() < end and proc.poll() is None:
        if path.exists() and path.stat().st_size >= size:
            break
        time.sleep(0.0005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_import_killed_at_random_points_leaves_a_recoverable_prefix(capture, full_import, tmp_path):
    whole, blocks = full_import
    rng = random.Random(9)
    mid_write = 0
    for i in range(KILLS):
        out = tmp_path / f"k{i}" / "out.wskt"
        out.parent.mkdir()
        target = 0 if i < 2 else rng.randrange(1, len(whole))
        proc = subprocess.Popen(
            [*WSKREPLAY, "import", str(capture), "--infer-calls", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _kill_when(proc, out, target, 60)
        if not out.exists():
            assert target == 0, f"kill {i}: no output although {target} bytes were seen"
            continue
        killed = out.read_bytes()
        assert whole.startswith(killed), f"kill {i}: not a prefix of the full import"
        complete = [b for b in blocks if b.end <= len(killed)]
        report = verify(out)
        assert report.readable and report.intact == (killed == whole)
        assert run_cli("verify", str(out)).returncode in (0, 1)
        with TraceReader(out, mode="scan") as reader:
            assert report.calls == len(reader.calls())
        recover(out, tmp_path / f"k{i}" / "recovered.wskt")
        same_data_blocks(tmp_path / f"k{i}" / "recovered.wskt", complete)
        if 0 < len(killed) < len(whole):
            mid_write += 1
    assert mid_write >= KILLS // 2, f"only {mid_write} kills landed while writing"


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """A field recording of 600 bulk sends (events only, payload capped at 128 bytes)."""
    path = tmp_path_factory.mktemp("rec") / "recording.etl"
    rec = fieldsim.field_recording(seed=4, bulk_calls=600)
    with open(path, "wb") as f:
        fieldsim.write_field_etl(rec, f, packets=False, payload_cap=128)
    return path


def test_the_recorders_journal_killed_at_random_points_keeps_every_flushed_event(
    recording, tmp_path
):
    events = read_recorder_events(str(recording))
    rng = random.Random(5)
    feeder = REPO / "tests" / "journal_feeder.py"
    for i in range(KILLS):
        journal = tmp_path / f"j{i}.wskt"
        proc = subprocess.Popen(
            [sys.executable, str(feeder), str(recording), str(journal), "--pace-us", "100"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout.readline() == f"events {len(events)}\n"
        stop_after = rng.randrange(0, len(events))
        written = 0
        for line in proc.stdout:
            if line.startswith("written "):
                written = int(line.split()[1])
                if written >= stop_after:
                    break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert run_cli("verify", str(journal)).returncode in (0, 1)
        recovered = tmp_path / f"r{i}.wskt"
        recover(journal, recovered)
        got = read_journal(str(recovered)).events
        assert len(got) >= written, f"kill {i}: {written} events reported written, {len(got)} back"
        assert got == events[: len(got)]
        calls_issued = sum(e.name == "SendExIssued" for e in got)
        if calls_issued:
            trace_path = tmp_path / f"t{i}.wskt"
            proc = run_cli("import", str(recovered), "-o", str(trace_path))
            assert proc.returncode == 0, proc.stderr
            assert len(TraceReader(trace_path).calls()) == calls_issued


def test_an_unrecovered_journal_is_refused_with_the_way_out(recording, tmp_path):
    journal = tmp_path / "j.wskt"
    whole = tmp_path / "whole.wskt"
    feeder = REPO / "tests" / "journal_feeder.py"
    subprocess.run(
        [sys.executable, str(feeder), str(recording), str(whole), "--pace-us", "0"],
        check=True, capture_output=True,
    )  # fmt: skip
    data = whole.read_bytes()
    journal.write_bytes(data[: len(data) // 2])
    assert_one_line_error(run_cli("import", str(journal), "-o", str(tmp_path / "t.wskt")),
                          "j.wskt", "recover")  # fmt: skip


def test_a_journal_with_a_separate_capture_imports_like_the_etl(tmp_path):
    """The shipped field recording's events through the journal, its packets as a separate
    capture on a clock 7 ms off (as record reads pktmon's file): same calls and bytes as
    importing the .etl."""
    field = REPO / "traces" / "field.etl"
    rec = fieldsim.field_recording(seed=7, bulk_calls=2)  # traces/make_samples.py
    journal = tmp_path / "field.journal"
    subprocess.run(
        [sys.executable, str(REPO / "tests" / "journal_feeder.py"), str(field), str(journal),
         "--pace-us", "0"], check=True, capture_output=True,
    )  # fmt: skip
    pcapng = tmp_path / "packets.pcapng"
    with open(pcapng, "wb") as f:
        fieldsim.write_field_pcapng(rec, f, clock_offset_ns=7_000_000)
    for args in (("import", str(field)), ("import", str(journal), str(pcapng))):
        out = tmp_path / f"{len(args)}.wskt"
        proc = run_cli(*args, "-o", str(out))
        assert proc.returncode == 0, proc.stderr
    by_etl, by_journal = TraceReader(tmp_path / "2.wskt"), TraceReader(tmp_path / "3.wskt")
    for column in ("socket", "length", "status", "completion_status", "stream_offset"):
        assert by_etl.call_column(column).tolist() == by_journal.call_column(column).tolist()
    assert by_etl.stream_lengths() == by_journal.stream_lengths()
    assert by_journal.metadata["source"] == "record"


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
def test_a_full_disk_is_a_one_line_error_and_a_recoverable_file(capture, full_import, tmp_path):
    whole, blocks = full_import
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        out = mount / "out.wskt"
        proc = run_cli("import", str(capture), "--infer-calls", "-o", str(out))
        assert_one_line_error(proc, str(out), "No space left on device", "recover")
        killed = out.read_bytes()
        assert 0 < len(killed) <= 4 << 20
        assert run_cli("verify", str(out)).returncode == 1
        recover(out, tmp_path / "recovered.wskt")
        complete = [b for b in blocks if b.end <= len(killed)]
        assert len(complete) > 2
        same_data_blocks(tmp_path / "recovered.wskt", complete)
        assert not [p for p in mount.iterdir() if p.name.endswith(".new")]
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_readers_of_a_file_being_written_see_consistent_prefixes(capture, full_import, tmp_path):
    whole, blocks = full_import
    out = tmp_path / "out.wskt"
    proc = subprocess.Popen(
        [*WSKREPLAY, "import", str(capture), "--infer-calls", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    seen: list[tuple[int, int]] = []
    errors: list[str] = []

    def read_while_written() -> None:
        while proc.poll() is None or not seen:
            if not out.exists():
                continue
            try:
                got = blocks_of(out, scan=True)
                report = verify(out)
            except Exception as exc:  # noqa: BLE001  (any failure is what the test looks for)
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            if got != blocks[: len(got)]:
                errors.append(f"a reader saw {len(got)} blocks that are not a prefix")
            if report.intact and sum(report.blocks.values()) != len(blocks):
                errors.append("a partial file was reported intact")
            seen.append((len(got), report.calls))

    readers = [threading.Thread(target=read_while_written) for _ in range(2)]
    for t in readers:
        t.start()
    proc.wait(timeout=300)
    for t in readers:
        t.join(timeout=300)
    assert not errors, errors[:3]
    assert proc.returncode == 0
    partial = {n for n, _ in seen if 0 < n < len(blocks)}
    assert len(partial) >= 2, f"readers saw only {sorted(partial)} of {len(blocks)} blocks"
    assert max(partial) > 3, f"no read while stream blocks were being written: {sorted(partial)}"
    with WsktFile(out) as f:
        assert f.trailer_index_offset() is not None
