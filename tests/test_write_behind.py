"""A whole trace is written behind: its blocks are compressed and written by the writer's
own thread, in order, while the next ones are encoded (``BlockWriter.write_behind``). The
file is byte for byte the one written in place; a failure in that thread (a write the
kernel refuses) reaches the user as the same one-line error; and a failure in the caller
(a damaged chunk of a stream read while writing) ends the thread and removes the file."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from wskreplay.errors import InputError
from wskreplay.formats.wskt import BLOCK_HEADER_SIZE, BlockType
from wskreplay.trace import TraceReader, read_trace, write_trace
from wskreplay.trace.model import Direction

from .conftest import REPO, assert_one_line_error, imported_captures, run_cli

SHIPPED = ("field.wskt", "sample.wskt", "smb2-inferred.wskt")
CAPTURES = ("zeek__smb_smb2_100_small_files.pcap", "pcapplusplus__650HttpResponses.pcap")
OPTIONS = ({}, {"zstd_level": None}, {"redact": True}, {"block_rows": 7, "stream_chunk": 1000})


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("recorded")
    synth = folder / "synth.wskt"
    assert run_cli("synth", "-o", str(synth), "--calls", "3000", "--sockets", "5").returncode == 0
    shipped = [REPO / "traces" / name for name in SHIPPED]
    return [*shipped, synth, *imported_captures(folder, CAPTURES)]


def _writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "wskt-write-behind"]


@pytest.mark.parametrize("options", OPTIONS, ids=["zstd", "stored", "redacted", "small-blocks"])
def test_written_behind_is_the_file_written_in_place(recorded, options, tmp_path):
    for path in recorded:
        for streams in ("memory", "in-place"):
            written = []
            for behind in (True, False):
                out = tmp_path / f"{behind}.wskt"
                write_trace(out, read_trace(path, streams=streams), write_behind=behind, **options)
                written.append(out.read_bytes())
            assert written[0] == written[1], (path.name, streams)
    assert _writer_threads() == []


def test_a_damaged_chunk_ends_the_writer_thread_and_removes_the_file(tmp_path):
    source = REPO / "traces" / "smb2-inferred.wskt"
    with TraceReader(source) as reader:
        (chunk,) = [
            b.ref
            for b in reader.blocks
            if b.ref.type == BlockType.STREAM and b.entry["sd"] == int(Direction.OUT)
        ]
    raw = bytearray(source.read_bytes())
    raw[chunk.offset + BLOCK_HEADER_SIZE + chunk.stored_len - 1] ^= 0xFF
    damaged = tmp_path / "damaged.wskt"
    damaged.write_bytes(raw)
    out = tmp_path / "out.wskt"
    with pytest.raises(InputError, match="checksum"):
        write_trace(out, read_trace(damaged, streams="in-place"), block_rows=3)
    assert not out.exists()
    assert _writer_threads() == []


def _limit_file_size() -> None:
    """In the child: writes past 64 KiB fail with EFBIG (instead of a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_write_refused_behind_is_the_one_line_output_error(recorded, tmp_path):
    """The kernel refuses a write of the writer's thread (the file-size limit, as a full
    disk would): the replay fails in one line naming the output and the offset, and what
    was written before it reads back (``verify``)."""
    synth = next(p for p in recorded if p.name == "synth.wskt")
    out = tmp_path / "out.wskt"
    exe = Path(sys.executable).parent / "wskreplay"
    proc = subprocess.run(
        [str(exe), "replay", str(synth), "--asap", "-o", str(out)],
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
        timeout=300,
    )
    assert_one_line_error(proc, "out.wskt", "cannot write at offset", "too large")
    assert 0 < out.stat().st_size <= 64 * 1024
    offset = proc.stderr.split("cannot write at offset ")[1].split(":")[0]
    proc = run_cli("verify", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "recoverable: " in proc.stdout and f"damage at offset {offset} " in proc.stdout
