"""Version policy: a newer major is refused, unknown fields of the same major are ignored."""

from __future__ import annotations

import io

import numpy as np
import pytest

from wskreplay.errors import InputError
from wskreplay.formats import columns as cc
from wskreplay.formats.wskt import (
    CALL_COLUMNS,
    FILE_HEADER,
    MAGIC,
    BlockType,
    BlockWriter,
    pack_body,
)
from wskreplay.trace import TraceReader, read_trace, verify

from .conftest import assert_one_line_error, run_cli, tiny_trace


def test_newer_major_version_is_refused_with_a_clear_message(small_trace_file, tmp_path):
    data = bytearray(small_trace_file.read_bytes())
    data[: FILE_HEADER.size] = FILE_HEADER.pack(MAGIC, 2, 3, 0)
    path = tmp_path / "future.wskt"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"format 2\.3; this wskreplay reads format 1\.x"):
        read_trace(path)
    for command in ("info", "verify"):
        assert_one_line_error(run_cli(command, str(path)), str(path), "upgrade wskreplay")


def test_not_a_trace_is_refused(tmp_path):
    path = tmp_path / "x.wskt"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    assert_one_line_error(run_cli("info", str(path)), str(path), "bad magic bytes")


def _future_minor_file(path) -> None:
    """A file a newer minor version might write: extra fields, an extra column, a new block."""
    trace = tiny_trace()
    buf = io.BytesIO()
    writer = BlockWriter(buf, minor=7)
    writer.write(
        BlockType.META,
        pack_body(
            {
                "metadata": trace.metadata,
                "clock": {"zero_utc_ns": 5, "type": "qpc", "qpc_frequency": 10**7},
                "redacted": False,
                "tool": "wskreplay 9.9",
                "new_meta_field": [1, 2, 3],
            }
        ),
        {},
    )
    writer.write(
        BlockType.SOCKETS,
        pack_body({"sockets": [{"id": 0, "category": "stream", "future": "yes"}]}),
        {"n": 1},
    )
    cols = cc.encode_columns(CALL_COLUMNS, trace.calls.columns)
    cols["future_column"] = cc.pack(np.arange(len(trace.calls), dtype=np.int64))
    del cols["irql"]
    writer.write(
        BlockType.CALLS,
        pack_body(
            {
                "n": len(trace.calls),
                "cols": cols,
                "ctl": trace.calls.control_blob,
                "extra": {"x": 1},
            }
        ),
        {"n": len(trace.calls), "k0": 0, "k1": 11, "t0": 0, "t1": 11000, "s": [0, 1]},
    )
    writer.write(42, pack_body({"something": "new"}), {"n": 1})
    writer.finish()
    path.write_bytes(buf.getvalue())


def test_unknown_fields_columns_and_blocks_of_the_same_major_are_ignored(tmp_path):
    path = tmp_path / "minor.wskt"
    _future_minor_file(path)
    trace = tiny_trace()
    with TraceReader(path) as reader:
        assert reader.format_version == "1.7"
        assert reader.clock.clock_type == "qpc"
        assert reader.sockets[0].category == "stream"
        calls = reader.calls()
    assert calls.column("irql").tolist() == [-1] * 12
    for name, _ in calls.SCHEMA:
        if name != "irql":
            assert np.array_equal(calls.column(name), trace.calls.column(name)), name
    report = verify(path)
    assert report.intact and report.blocks["type42"] == 1
    proc = run_cli("info", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
