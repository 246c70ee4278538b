"""What ``wskreplay info`` and ``wskreplay export --jsonl`` print, as plain data."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from wskreplay.formats import ntstatus
from wskreplay.formats.wskt import BlockType
from wskreplay.trace import TraceReader
from wskreplay.trace.model import COMPLETED, COMPLETION_UNKNOWN, CallTable, Direction


def _count_statuses(values: np.ndarray) -> dict[str, int]:
    codes, counts = np.unique(values, return_counts=True)
    return {ntstatus.hex_code(int(c)): int(k) for c, k in zip(codes, counts, strict=True)}


def trace_info(reader: TraceReader) -> dict[str, Any]:
    """The summary ``info --json`` prints; reads call columns and the index, no payload."""
    statuses: Counter[str] = Counter()
    completions: Counter[str] = Counter()
    calls = 0
    t_min: list[int] = []
    t_max: list[int] = []
    for table in reader.call_blocks():
        calls += len(table)
        done = table.column("completed") == COMPLETED
        statuses.update(_count_statuses(table.column("status")))
        completions.update(_count_statuses(table.column("completion_status")[done]))
        t_min.append(int(table.column("issue_ns").min()))
        t_max.append(int(max(table.column("return_ns").max(), table.column("issue_ns").max())))
        if done.any():
            t_max.append(int(table.column("completion_ns")[done].max()))
    segments = 0
    for b in reader.blocks:
        if b.entry.get("n") and "t0" in b.entry and b.ref.type != BlockType.CALLS:
            t_min.append(b.entry["t0"])
            t_max.append(b.entry["t1"])
        if b.ref.type == BlockType.SEGMENTS:
            segments += b.entry["n"]
    lengths = reader.stream_lengths()
    return {
        "file": reader.path,
        "format_version": reader.format_version,
        "sockets": len(reader.sockets),
        "calls": calls,
        "segments": segments,
        "payload_bytes": reader.payload_bytes(),
        "stream_bytes": sum(n for (_, d), n in lengths.items() if d == Direction.OUT),
        "received_bytes": sum(n for (_, d), n in lengths.items() if d == Direction.IN),
        "duration_ns": (max(t_max) - min(t_min)) if t_min else 0,
        "statuses": dict(sorted(statuses.items())),
        "completions": dict(sorted(completions.items())),
        "redacted": reader.redacted,
        "clock": {
            "zero_utc_ns": reader.clock.zero_utc_ns,
            "type": reader.clock.clock_type,
            "qpc_frequency": reader.clock.qpc_frequency,
        },
        "metadata": reader.metadata,
    }


def call_records(table: CallTable) -> Iterator[dict[str, Any]]:
    """One JSON-ready dict per call: every field, NTSTATUS as 0x%08X plus its name."""
    cols = {name: arr.tolist() for name, arr in table.columns.items()}
    for i in range(len(table)):
        done = cols["completed"][i] == COMPLETED
        unknown = cols["completed"][i] == COMPLETION_UNKNOWN
        status = cols["status"][i]
        cstatus = cols["completion_status"][i] if done else None
        control = table.control_info(i) if cols["control_len"][i] >= 0 else None
        yield {
            "seq": cols["seq"][i],
            "socket": cols["socket"][i],
            "issue_ns": cols["issue_ns"][i],
            "return_ns": cols["return_ns"][i],
            "flags": cols["flags"][i],
            "offset": cols["offset"][i],
            "length": cols["length"][i],
            "control_info": control.hex() if control is not None else None,
            "status": ntstatus.hex_code(status),
            "status_name": ntstatus.name(status),
            "completed": None if unknown else done,
            "completion_ns": cols["completion_ns"][i] if done else None,
            "completion_status": ntstatus.hex_code(cstatus) if cstatus is not None else None,
            "completion_status_name": ntstatus.name(cstatus) if cstatus is not None else None,
            "information": cols["information"][i] if done else None,
            "irp": f"0x{cols['irp'][i]:016X}",
            "irql": cols["irql"][i] if cols["irql"][i] >= 0 else None,
            "stream_offset": cols["stream_offset"][i],
            "stream": "out" if ntstatus.is_success(status) else "unsent",
        }
