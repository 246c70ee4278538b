"""Hypothesis strategies for trace model values."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from wskreplay.trace.model import (
    CALL_SCHEMA,
    SEGMENT_SCHEMA,
    CallTable,
    Clock,
    Direction,
    Event,
    SegmentTable,
    Socket,
    Stream,
    Trace,
)

i64 = st.integers(-(1 << 63), (1 << 63) - 1)
u64 = st.integers(0, (1 << 64) - 1)
text = st.text(max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | i64
    | u64
    | text
    | st.binary(max_size=16)
    | st.floats(allow_nan=False)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def call_tables(draw, max_rows: int = 25) -> CallTable:
    n = draw(st.integers(0, max_rows))
    cols = {}
    for name, dtype in CALL_SCHEMA:
        elements = None
        if name == "socket":
            elements = st.integers(0, 3)
        elif name == "completed":
            elements = st.integers(0, 1)
        elif name == "control_len":
            elements = st.integers(-1, 20)
        elif name in ("stream_offset", "length"):
            elements = st.integers(0, 200)
        elif name == "status":
            elements = st.sampled_from([0, 0x103, 0xC00000B6, 0xC00000BB, 0xC000020D])
        cols[name] = draw(hnp.arrays(dtype, n, elements=elements))
    blob = draw(
        st.binary(
            min_size=int(np.maximum(cols["control_len"], 0).sum()),
            max_size=int(np.maximum(cols["control_len"], 0).sum()),
        )
    )
    return CallTable(cols, blob)


@st.composite
def segment_tables(draw) -> SegmentTable:
    n = draw(st.integers(0, 25))
    cols = {}
    for name, dtype in SEGMENT_SCHEMA:
        elements = (
            st.integers(0, 2)
            if name == "direction"
            else (st.integers(0, 3) if name == "socket" else None)
        )
        cols[name] = draw(hnp.arrays(dtype, n, elements=elements))
    return SegmentTable(cols)


@st.composite
def streams(draw, socket: int, direction: Direction) -> Stream:
    length = draw(st.integers(1, 300))
    cuts = sorted(draw(st.sets(st.integers(0, length), max_size=6)))
    gaps = []
    for a, b in zip(cuts[::2], cuts[1::2], strict=False):
        if b > a:
            gaps.append((a, b))
    merged: list[tuple[int, int]] = []
    for a, b in gaps:
        if merged and merged[-1][1] >= a:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    data = bytearray(draw(st.binary(min_size=length, max_size=length)))
    for a, b in merged:
        data[a:b] = bytes(b - a)
    return Stream(socket, direction, length, data, merged, None)


@st.composite
def traces(draw) -> Trace:
    ids = draw(st.lists(st.integers(0, 3), unique=True, max_size=4))
    sockets = {
        i: Socket(
            i,
            draw(st.sampled_from(["connection", "stream"])),
            draw(st.sampled_from([2, 23])),
            draw(text),
            draw(st.integers(0, 65535)),
            draw(text),
            draw(st.integers(0, 65535)),
            draw(st.sampled_from(["connect", "socket-connect", "accept"])),
            draw(i64),
            draw(st.none() | i64),
            draw(u64),
        )
        for i in ids
    }
    stream_keys = draw(
        st.lists(
            st.tuples(st.integers(0, 3), st.sampled_from(list(Direction))), unique=True, max_size=5
        )
    )
    events = draw(
        st.lists(
            st.builds(
                Event,
                i64,
                text,
                st.none() | st.integers(0, 3),
                st.dictionaries(text, values, max_size=3),
            ),
            max_size=5,
        )
    )
    return Trace(
        metadata=draw(st.dictionaries(text, values, max_size=5)),
        clock=Clock(draw(i64), draw(text), draw(st.none() | st.integers(1, 10**10))),
        sockets=sockets,
        calls=draw(call_tables()),
        streams={k: draw(streams(*k)) for k in stream_keys},
        segments=draw(segment_tables()),
        events=events,
    )
