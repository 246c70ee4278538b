"""Crash safety: a trace cut at any byte or with a damaged block keeps every intact block."""

from __future__ import annotations

from collections import Counter

import pytest

from wskreplay.errors import InputError
from wskreplay.formats.wskt import BLOCK_HEADER_SIZE, FILE_HEADER, BlockType
from wskreplay.trace import TraceReader, read_trace, recover, verify
from wskreplay.trace.model import CallTable

from .conftest import assert_one_line_error, run_cli


def _blocks(path):
    with TraceReader(path) as reader:
        calls = {
            b.ref.offset: reader._calls(b.ref)
            for b in reader.blocks
            if b.ref.type == BlockType.CALLS
        }
        return [(b.ref.offset, b.ref.end, BlockType(b.ref.type).name) for b in reader.blocks], calls


def _expected(blocks, calls, cut):
    whole = [b for b in blocks if b[1] <= cut]
    table = CallTable.concat([calls[o] for o, _, t in whole if t == "CALLS"])
    return Counter(t for _, _, t in whole), table


def test_cut_at_every_byte(small_trace_file, tmp_path):
    data = small_trace_file.read_bytes()
    blocks, calls = _blocks(small_trace_file)
    cut_file = tmp_path / "cut.wskt"
    out = tmp_path / "rec.wskt"
    boundaries = {end for _, end, _ in blocks}
    for cut in range(len(data) + 1):
        cut_file.write_bytes(data[:cut])
        if cut < FILE_HEADER.size:
            with pytest.raises(InputError):
                verify(cut_file)
            continue
        report = verify(cut_file)
        expected_blocks, expected_calls = _expected(blocks, calls, cut)
        assert report.blocks == expected_blocks, cut
        assert report.calls == len(expected_calls), cut
        assert report.intact == (cut == len(data)), cut
        if not report.intact:
            assert report.index == "missing"
        if cut == len(data) or not (cut in boundaries or cut % 7 == 0):
            continue
        if not report.readable:
            with pytest.raises(InputError, match="nothing recoverable"):
                recover(cut_file, out)
            continue
        recover(cut_file, out)
        assert verify(out).intact
        back = read_trace(out)
        assert back.calls == expected_calls, cut
        assert back.metadata["recovered"]["from"] == "cut.wskt"


@pytest.mark.parametrize("where", ["header", "body"])
def test_a_damaged_block_loses_only_itself(small_trace_file, tmp_path, where):
    data = small_trace_file.read_bytes()
    blocks, calls = _blocks(small_trace_file)
    all_calls = CallTable.concat(calls.values())
    for offset, end, kind in blocks:
        flip = offset + 5 if where == "header" else (offset + BLOCK_HEADER_SIZE + end) // 2
        damaged = bytearray(data)
        damaged[flip] ^= 0x40
        path = tmp_path / f"{kind}-{offset}.wskt"
        path.write_bytes(bytes(damaged))
        report = verify(path)
        assert not report.intact
        assert [(d.offset, d.length) for d in report.damages] == [(offset, end - offset)], kind
        expected = (
            "block header checksum mismatch"
            if where == "header"
            else "block body checksum mismatch"
        )
        assert report.damages[0].what == expected
        expected_blocks = Counter(t for o, _, t in blocks if o != offset)
        assert report.blocks == expected_blocks
        with pytest.raises(InputError, match="no valid footer index|checksum mismatch"):
            read_trace(path)
        out = tmp_path / "rec.wskt"
        recover(path, out)
        back = read_trace(out)
        kept = CallTable.concat([t for o, t in calls.items() if o != offset])
        assert back.calls == (kept if kind == "CALLS" else all_calls)


def test_damaged_index_keeps_every_data_block(small_trace_file, tmp_path):
    data = bytearray(small_trace_file.read_bytes())
    data[-20] ^= 0xFF
    path = tmp_path / "idx.wskt"
    path.write_bytes(bytes(data))
    report = verify(path)
    assert report.index == "damaged" and not report.intact
    assert report.calls == 12
    assert report.damages and report.damages[0].what == "block body checksum mismatch"


def test_cli_verify_and_recover_on_a_cut_file(small_trace_file, tmp_path):
    data = small_trace_file.read_bytes()
    blocks, _ = _blocks(small_trace_file)
    cut = blocks[len(blocks) // 2][1] + 10
    path = tmp_path / "cut.wskt"
    path.write_bytes(data[:cut])
    proc = run_cli("verify", str(path))
    assert proc.returncode == 1, proc.stderr
    assert (
        "DAMAGED" in proc.stdout
        and f"damage at offset {blocks[len(blocks) // 2][1]}" in proc.stdout
    )
    assert_one_line_error(run_cli("info", str(path)), str(path), "no valid footer index")
    out = tmp_path / "rec.wskt"
    proc = run_cli("recover", str(path), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert run_cli("verify", str(out)).returncode == 0
    assert run_cli("info", str(out), "--json").returncode == 0


def test_cli_verify_exits_2_when_nothing_is_readable(tmp_path):
    path = tmp_path / "empty.wskt"
    path.write_bytes(b"")
    assert_one_line_error(run_cli("verify", str(path)), str(path), "not a .wskt trace")
    path.write_bytes(FILE_HEADER.pack(b"\x89WSKT\r\n\x1a", 1, 0, 0) + b"WSKB" + b"\0" * 10)
    assert_one_line_error(run_cli("verify", str(path)), str(path), "nothing readable")


def test_an_index_that_lies_about_a_block_is_reported(small_trace_file, tmp_path):
    import io

    from wskreplay.formats.wskt import BlockWriter

    buf = io.BytesIO()
    writer = BlockWriter(buf)
    with TraceReader(small_trace_file) as reader:
        for b in reader.blocks:
            entry = {k: v for k, v in b.entry.items() if k not in ("o", "t")}
            if b.ref.type == BlockType.STREAM:
                entry["sn"] += 1000
            writer.write_raw(*reader.file.raw_block(b.ref), b.ref.type, entry)
    writer.finish()
    path = tmp_path / "liar.wskt"
    path.write_bytes(buf.getvalue())
    report = verify(path)
    assert report.index == "damaged" and not report.intact and not report.damages
    proc = run_cli("verify", str(path))
    assert proc.returncode == 1 and "footer index: damaged" in proc.stdout
