"""Files a crashed recorder left behind: :func:`verify` says what a file holds and what
is damaged, :func:`recover` writes what can be read back to a new file."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from wskreplay import __version__
from wskreplay.errors import InputError, OutputError
from wskreplay.formats.wskt import (
    BlockType,
    BlockWriter,
    Damage,
    pack_body,
)
from wskreplay.trace.reader import BlockInfo, TraceReader


@dataclass
class VerifyReport:
    path: str
    format_version: str
    size: int
    intact: bool
    blocks: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    segments: int = 0
    sockets: int = 0
    first_issue_ns: int | None = None
    last_issue_ns: int | None = None
    damages: list[Damage] = field(default_factory=list)
    index: str = "missing"

    @property
    def readable(self) -> bool:
        return sum(self.blocks.values()) > 0


def _index_state(reader: TraceReader) -> str:
    """``valid`` when the footer index describes exactly the blocks a scan finds."""
    if reader.file.trailer_index_offset() is None:
        return "missing"
    try:
        indexed = reader._from_index()
    except InputError:
        return "damaged"
    if indexed is None:
        return "damaged"

    def described(blocks: list[BlockInfo]) -> list[Any]:
        known = BlockType._value2member_map_
        return [
            (
                b.ref.offset,
                b.ref.type,
                {k: v for k, v in b.entry.items() if k not in ("o", "t")}
                if b.ref.type in known
                else None,
            )
            for b in blocks
        ]

    return "valid" if described(indexed) == described(reader.blocks) else "damaged"


def verify(path: str | os.PathLike[str]) -> VerifyReport:
    """Read every block of a trace and say what is intact and what is damaged.

    Raises :class:`InputError` when the file is not a .wskt trace at all.
    """
    with TraceReader(path, mode="scan") as reader:
        index_state = _index_state(reader)
        report = VerifyReport(
            reader.path,
            reader.format_version,
            reader.file.size,
            intact=False,
            damages=list(reader.damages),
            index=index_state,
        )
        for b in reader.blocks:
            report.blocks[
                BlockType(b.ref.type).name
                if b.ref.type in BlockType._value2member_map_
                else f"type{b.ref.type}"
            ] += 1
            if b.ref.type == BlockType.CALLS and b.entry["n"]:
                report.calls += b.entry["n"]
                t0, t1 = b.entry["t0"], b.entry["t1"]
                report.first_issue_ns = (
                    t0 if report.first_issue_ns is None else min(report.first_issue_ns, t0)
                )
                report.last_issue_ns = (
                    t1 if report.last_issue_ns is None else max(report.last_issue_ns, t1)
                )
            elif b.ref.type == BlockType.SEGMENTS:
                report.segments += b.entry["n"]
        report.sockets = len(reader.sockets)
        report.intact = index_state == "valid" and not report.damages and report.blocks["META"] == 1
        return report


def recover(path: str | os.PathLike[str], out: str | os.PathLike[str]) -> VerifyReport:
    """Write to ``out`` a valid trace holding every intact block of ``path``."""
    report = verify(path)
    if not report.readable:
        raise InputError(os.fspath(path), "nothing recoverable: no intact block")
    with TraceReader(path, mode="scan") as reader:
        metadata = dict(reader.metadata)
        metadata["recovered"] = {
            "from": os.path.basename(os.fspath(path)),
            "damages": [[d.offset, d.length, d.what] for d in reader.damages],
            "meta_block_lost": not any(b.ref.type == BlockType.META for b in reader.blocks),
        }
        try:
            f = open(out, "wb")
        except OSError as exc:
            raise OutputError(os.fspath(out), f"cannot create: {exc.strerror or exc}") from None
        with f:
            writer = BlockWriter(f, zstd_level=3, path=os.fspath(out))
            meta = {
                "metadata": metadata,
                "clock": {
                    "zero_utc_ns": reader.clock.zero_utc_ns,
                    "type": reader.clock.clock_type,
                    "qpc_frequency": reader.clock.qpc_frequency,
                },
                "redacted": reader.redacted,
                "tool": f"wskreplay {__version__}",
            }
            writer.write(BlockType.META, pack_body(meta), {})
            for b in reader.blocks:
                if b.ref.type in (BlockType.META, BlockType.INDEX):
                    continue
                head, stored = reader.file.raw_block(b.ref)
                writer.write_raw(head, stored, b.ref.type, b.entry)
            writer.finish()
    return report
