"""A stream described by where its bytes lie (wskreplay/recorder/build.py StreamLayout):
many windows copied in one go (``windows``, what the import's payload check reads) equal
the windows read one at a time, overlays found by search equal every overlay walked, on
generated layouts (sorted wire pieces with gaps; overlays that overlap each other and the
wire) and with the reference selected."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.recorder.build import StreamLayout
from wskreplay.trace.model import Direction


@st.composite
def layouts(draw) -> StreamLayout:
    sizes = draw(st.lists(st.tuples(st.integers(0, 6), st.integers(1, 9)), max_size=12))
    starts, lens, at = [], [], []
    pos, placed = 0, 0
    for gap, n in sizes:
        pos += gap
        starts.append(pos)
        lens.append(n)
        at.append(placed)
        placed += n + draw(st.integers(0, 3))
        pos += n
    length = pos + draw(st.integers(0, 5))
    buffer = memoryview(bytes(range(256)) * (placed // 256 + 1))
    overlays = draw(
        st.lists(st.tuples(st.integers(0, max(length - 1, 0)), st.binary(min_size=1, max_size=6)))
    )
    layout = StreamLayout(0, Direction.OUT, length, buffer, overlays=sorted(overlays))
    layout.starts = np.array(starts, np.int64)
    layout.lens = np.array(lens, np.int64)
    layout.ats = np.array(at, np.int64)
    return layout


def slow_window(layout: StreamLayout, lo: int, hi: int) -> bytes:
    """The window byte by byte: the last piece or overlay covering a byte gives it."""
    out = bytearray(hi - lo)
    for s, n, a in zip(
        *(c.tolist() for c in (layout.starts, layout.lens, layout.ats)), strict=True
    ):
        for k in range(max(s, lo), min(s + n, hi)):
            out[k - lo] = layout.buffer[a + k - s]
    for offset, raw in layout.overlays:
        for k in range(max(offset, lo), min(offset + len(raw), hi)):
            out[k - lo] = raw[k - offset]
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(layouts(), st.data())
def test_windows_equal_one_window_at_a_time(layout, data):
    cuts = sorted(data.draw(st.lists(st.integers(0, layout.length), min_size=2, max_size=10)))
    lo = np.array(cuts[:-1], np.int64)
    hi = np.array(cuts[1:], np.int64)
    ranges = list(zip(cuts[:-1], cuts[1:], strict=True))
    one_by_one = b"".join(slow_window(layout, a, b) for a, b in ranges)
    assert bytes(layout.windows(lo, hi)) == one_by_one
    wire_only = StreamLayout(0, Direction.OUT, layout.length, layout.buffer)
    wire_only.starts, wire_only.lens, wire_only.ats = layout.starts, layout.lens, layout.ats
    wire_only.overlays = []
    expected = b"".join(slow_window(wire_only, a, b) for a, b in ranges)
    assert bytes(wire_only.windows(lo, hi)) == expected
    with pytest.MonkeyPatch.context() as m:
        m.setenv("WSKREPLAY_PURE_PYTHON", "1")
        assert bytes(wire_only.windows(lo, hi)) == expected
