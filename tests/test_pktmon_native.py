"""The C twin of ``pktmon.PacketIds`` (wskreplay/formats/_pktmon.c) gives every PktMon
appearance the packet id the reference gives it: on hypothesis-generated runs of numbered
and unnumbered appearances (times either side of both spans, groups and contents shared,
prefixes, VLAN tags and 802.11 headers before the network bytes, one (component, edge)
met twice), fed in several calls. The 24H2 recordings of ``tests/test_etl_batch.py``
compare the whole batch pass, which uses it, with the reference pass."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.formats import pcap, pktmon
from wskreplay.formats.reference import accelerator

native = accelerator("_pktmon")
GAP, SPAN = pktmon.APPEARANCE_GAP_NS, pktmon.NUMBERED_SPAN_NS


def c_ids():
    return native.PacketIds(
        gap_ns=GAP,
        span_ns=SPAN,
        match_bytes=pktmon.MATCH_BYTES,
        ethernet=pcap.LINKTYPE_ETHERNET,
        ieee80211=pktmon.LINKTYPE_IEEE802_11,
    )


def test_the_extension_is_built():
    assert native is not None


DOT11_HEADER = {
    (0x08, 0x00): 32,
    (0x08, 0x03): 38,
    (0x08, 0x83): 38,
    (0x88, 0x00): 34,
    (0x88, 0x03): 40,
    (0x88, 0x83): 44,
}
"""Data frames' frame control bytes -> the bytes before the network header: 24, 6 more
with four addresses, 2 of QoS control, 4 of HT control (QoS and the order bit), 8 of
LLC/SNAP."""
BASES = [bytes(range(k, k + 60)) for k in (0, 1)] + [bytes(30), bytes(range(40))]


@st.composite
def appearances(draw):
    steps = st.sampled_from([0, 1, 5_000, GAP - 1, GAP, GAP + 1, SPAN, SPAN + 1, -1])
    t = draw(st.integers(-(2**62), 2**62))
    rows = []
    for _ in range(draw(st.integers(1, 60))):
        t += draw(steps)
        if draw(st.integers(0, 3)) == 0:
            group = draw(st.sampled_from([0, 1, 2, 2**64 - 1, 2**63]))
            rows.append((t, group, True, b"", 0, 0, 0))
            continue
        base = draw(st.sampled_from(BASES))
        network = base[: draw(st.sampled_from([len(base), 40, 39, 50, 0, 10]))]
        if draw(st.booleans()):
            k = draw(st.sampled_from([20, 45]))
            network = network[:k] + bytes([draw(st.integers(0, 255))]) + network[k + 1 :]
        linktype = draw(st.sampled_from([pcap.LINKTYPE_ETHERNET, pktmon.LINKTYPE_IEEE802_11, 0]))
        if linktype == pcap.LINKTYPE_ETHERNET:
            tags = draw(
                st.sampled_from([b"", b"\x81\x00\x00\x01", b"\x88\xa8\x00\x02\x81\x00\x00\x03"])
            )
            head = bytes(12) + tags + b"\x08\x00"
            frame = (head + network)[: draw(st.sampled_from([None, 13, 15, 17]))]
        elif linktype == pktmon.LINKTYPE_IEEE802_11:
            fc = draw(st.sampled_from(sorted(DOT11_HEADER)))
            head = bytes(fc) + bytes(DOT11_HEADER[fc] - 2)
            frame = (head + network)[: draw(st.sampled_from([None, 1, 30]))]
        else:
            frame = network
        component, edge = draw(st.integers(0, 2)), draw(st.integers(0, 1))
        rows.append((t, 0, False, frame, linktype, component, edge))
    return rows


def reference_ids(rows) -> list[int]:
    ids = pktmon.PacketIds()
    out = []
    for t, group, numbered, frame, linktype, component, edge in rows:
        if numbered:
            out.append(ids.numbered(group, t))
        else:
            content = pktmon.network_bytes(frame, linktype)
            out.append(ids.by_content(t, component, edge, content))
    return out


def c_assign(ids, rows) -> np.ndarray:
    """The rows through the C object ``ids``; their frames laid out across two buffers
    (row k's in buffer k % 2, the first starting with other bytes)."""
    n = len(rows)
    out = np.empty(n, np.int64)
    parts: list[bytearray] = [bytearray(b"junk"), bytearray()]
    which, at = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for k, (_, _, numbered, frame, *_rest) in enumerate(rows):
        if not numbered:
            which[k] = k % 2
            at[k] = len(parts[k % 2])
            parts[k % 2] += frame + b"\xee"

    def column(k):
        values = [r[k] for r in rows]
        if k == 1:
            return np.array(values, np.uint64).view(np.int64)
        return np.array(values, np.int64)

    length = np.array([len(r[3]) for r in rows], np.int64)
    ids.assign(out, column(0), column(1), column(2), which, at, length, column(4), column(5),
               column(6), [bytes(p) for p in parts])  # fmt: skip
    return out


@settings(max_examples=300, deadline=None)
@given(appearances(), st.lists(st.integers(1, 60), min_size=1, max_size=3))
def test_the_same_ids_as_the_reference(rows, cuts):
    ids = c_ids()
    got: list[int] = []
    lo = 0
    for size in [*cuts, len(rows)]:
        part = rows[lo : lo + size]
        if part:
            got += c_assign(ids, part).tolist()
        lo += size
    assert got == reference_ids(rows)
    assert ids.next == max(got) + 1


def test_a_frame_outside_its_buffer_is_refused():
    ids = c_ids()
    one = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="row 0: frame outside its buffer"):
        ids.assign(one.copy(), one, one, one, one, one, np.array([5], np.int64), one, one, one,
                   [b"abc"])  # fmt: skip
    with pytest.raises(ValueError, match="column at"):
        ids.assign(one.copy(), one, one, one, one, np.zeros(2, np.int64), one, one, one, one,
                   [b"abc"])  # fmt: skip
