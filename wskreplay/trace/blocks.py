"""What a trace file's blocks and index entries hold, as the file keeps them: sockets and
events as msgpack values, calls and segments as column blocks, each block's index entry
(docs/format.md). Shared by the writer, the reader and verify/recover."""

from __future__ import annotations

from typing import Any

import numpy as np

from wskreplay.formats import columns as colcodec
from wskreplay.formats.wskt import (
    CALL_COLUMNS,
    FILE_HEADER,
    SEGMENT_COLUMNS,
    BlockType,
)
from wskreplay.trace.model import (
    CallTable,
    Event,
    SegmentTable,
    Socket,
)

FILE_HEADER_SIZE = FILE_HEADER.size
DEFAULT_BLOCK_ROWS = 65536
DEFAULT_STREAM_CHUNK = 4 << 20
DEFAULT_REDACT_PIECE = 64 << 10


def socket_to_wire(s: Socket) -> dict[str, Any]:
    return {
        "id": s.id,
        "category": s.category,
        "family": s.family,
        "local_addr": s.local_addr,
        "local_port": s.local_port,
        "remote_addr": s.remote_addr,
        "remote_port": s.remote_port,
        "origin": s.origin,
        "open_ns": s.open_ns,
        "close_ns": s.close_ns,
        "handle": s.handle,
    }


def socket_from_wire(d: Any) -> Socket:
    if not isinstance(d, dict) or not isinstance(d.get("id"), int):
        raise ValueError("socket record without an integer id")
    known = {k: d[k] for k in _SOCKET_TYPES if k in d}
    for key, value in known.items():
        if not isinstance(value, _SOCKET_TYPES[key]) or isinstance(value, bool):
            raise ValueError(f"socket field {key!r} has type {type(value).__name__}")
    return Socket(**known)


def is_event(e: Event) -> bool:
    return (
        isinstance(e.time_ns, int)
        and isinstance(e.kind, str)
        and isinstance(e.attrs, dict)
        and (e.socket is None or isinstance(e.socket, int))
    )


_SOCKET_TYPES = {
    "id": int,
    "category": str,
    "family": int,
    "local_addr": str,
    "local_port": int,
    "remote_addr": str,
    "remote_port": int,
    "origin": str,
    "open_ns": int,
    "close_ns": (int, type(None)),
    "handle": int,
}


def entry_ok(entry: dict[str, Any]) -> bool:
    """Whether an index entry has the fields its block type needs, with the right types."""
    ints = {
        BlockType.CALLS: ("n", "k0", "k1", "t0", "t1"),
        BlockType.SEGMENTS: ("n", "t0", "t1"),
        BlockType.EVENTS: ("n", "t0", "t1"),
        BlockType.STREAM: ("sd", "so", "sn"),
    }
    kind = entry.get("t")
    if not all(isinstance(entry.get(k), int) for k in ints.get(kind, ())):
        return False
    if kind in (BlockType.CALLS, BlockType.SEGMENTS, BlockType.STREAM):
        s = entry.get("s")
        if not isinstance(s, list) or not all(isinstance(x, int) for x in s):
            return False
    if kind == BlockType.STREAM:
        return len(entry["s"]) == 1 and entry["sd"] in (0, 1, 2) and entry["so"] >= 0 <= entry["sn"]
    return True


def _span(values: np.ndarray) -> tuple[int, int]:
    """(min, max), or (0, -1) for no values: an empty range no query matches."""
    return (int(values.min()), int(values.max())) if len(values) else (0, -1)


def calls_entry(table: CallTable) -> dict[str, Any]:
    k0, k1 = _span(table.column("seq"))
    t0, t1 = _span(table.column("issue_ns"))
    s = np.unique(table.column("socket")).tolist()
    return {"n": len(table), "k0": k0, "k1": k1, "t0": t0, "t1": t1, "s": s}


def segments_entry(table: SegmentTable) -> dict[str, Any]:
    t0, t1 = _span(table.column("time_ns"))
    return {"n": len(table), "t0": t0, "t1": t1, "s": np.unique(table.column("socket")).tolist()}


def events_entry(events: list[Event]) -> dict[str, Any]:
    t0, t1 = _span(np.array([e.time_ns for e in events], dtype=np.int64))
    return {"n": len(events), "t0": t0, "t1": t1}


def stream_entry(body: dict[str, Any]) -> dict[str, Any]:
    n = len(body["b"]) if "b" in body else body["n"]
    kind = "data" if "b" in body else ("digest" if "h" in body else "gap")
    return {"s": [body["s"]], "sd": body["d"], "so": body["o"], "sn": n, "k": kind}


def calls_block(part: CallTable) -> tuple[dict[str, Any], dict[str, Any]]:
    cols = colcodec.encode_columns(CALL_COLUMNS, part.columns)
    return {"n": len(part), "cols": cols, "ctl": part.control_blob}, calls_entry(part)


def segments_block(part: SegmentTable) -> tuple[dict[str, Any], dict[str, Any]]:
    cols = colcodec.encode_columns(SEGMENT_COLUMNS, part.columns)
    return {"n": len(part), "cols": cols}, segments_entry(part)
