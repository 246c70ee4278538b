"""The reassembly of all connections at once (``recorder/tcp_batch.py``) against its
reference, one connection at a time (``tcp._connection``): every field of every
connection and direction. Used by ``tests/test_tcp_batch.py`` and the capture fuzz
harnesses."""

from __future__ import annotations

import dataclasses

import numpy as np

from wskreplay.formats import pcap
from wskreplay.recorder import tcp, tcp_batch


def both(frames: pcap.Frames) -> tuple[list[tcp.Connection], list[tcp.Connection]]:
    """The connections of ``frames`` by the batch, and by the reference."""
    decoded = tcp.decode(frames, tcp.CaptureOptions().decode)
    groups = tcp.group_by_connection(decoded.segments)
    paths = decoded.report.paths.paths
    seg, buffer = decoded.segments, decoded.buffer
    reference = [tcp._connection(seg, rows, buffer, paths) for rows in groups]
    return tcp_batch.connections(seg, groups, buffer, paths), reference


def same_value(a: object, b: object) -> bool:
    if isinstance(a, tcp.Pieces):
        return all(same_value(getattr(a, f), getattr(b, f)) for f in ("start", "at", "length"))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


def assert_same(batch: list[tcp.Connection], reference: list[tcp.Connection]) -> None:
    assert len(batch) == len(reference)
    for k, (c, r) in enumerate(zip(batch, reference, strict=True)):
        for f in dataclasses.fields(tcp.Connection):
            if f.name in ("to_server", "to_client"):
                for g in dataclasses.fields(tcp.Direction):
                    mine, theirs = (
                        getattr(getattr(c, f.name), g.name),
                        getattr(getattr(r, f.name), g.name),
                    )
                    assert same_value(mine, theirs), (
                        f"connection {k} {f.name}.{g.name}: {mine!r} != {theirs!r}"
                    )
            else:
                assert same_value(getattr(c, f.name), getattr(r, f.name)), (
                    f"connection {k} {f.name}"
                )
