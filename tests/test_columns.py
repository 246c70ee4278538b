"""The columnar integer codec: every transform is exact for any 64-bit input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from wskreplay.errors import InputError
from wskreplay.formats import columns as cc
from wskreplay.formats.wskt import CALL_COLUMNS, SEGMENT_COLUMNS

SPECS = (
    cc.ColumnSpec("group", "u4"),
    cc.ColumnSpec("mask", "u1"),
    cc.ColumnSpec("length", "u8"),
    cc.ColumnSpec("plain", "i8"),
    cc.ColumnSpec("delta", "u8", "delta"),
    cc.ColumnSpec("minus", "i8", "minus", base="plain"),
    cc.ColumnSpec("masked", "u8", "minus", base="length", mask="mask"),
    cc.ColumnSpec("next", "u8", "next", group=("group", "mask"), length="length"),
)


@st.composite
def tables(draw):
    n = draw(st.integers(0, 40))
    cols = {}
    for spec in SPECS:
        elements = None
        if spec.name in ("group", "mask"):
            elements = st.integers(0, 3)
        cols[spec.name] = draw(hnp.arrays(spec.dtype, n, elements=elements))
    return n, cols


@given(tables())
@settings(max_examples=300, deadline=None)
def test_every_transform_round_trips(table):
    n, cols = table
    encoded = cc.encode_columns(SPECS, cols)
    decoded = cc.decode_columns(SPECS, encoded, n, path="t", offset=0)
    for spec in SPECS:
        assert decoded[spec.name].dtype == np.dtype(spec.dtype)
        assert np.array_equal(decoded[spec.name], cols[spec.name]), spec.name


def test_contiguous_stream_offsets_cost_nothing():
    lengths = np.array([5, 7, 11, 13], dtype="u8")
    cols = {
        "group": np.zeros(4, "u4"),
        "mask": np.zeros(4, "u1"),
        "length": lengths,
        "next": np.concatenate(([0], np.cumsum(lengths)[:-1])).astype("u8"),
    }
    spec = SPECS[-1]
    assert cc.pack(cc.encode_transform(spec, cols)) == {"w": 0, "b": 0}


def test_common_step_is_factored_out():
    ticks = np.arange(0, 1000, 7, dtype=np.int64) * 100 + 5
    packed = cc.pack(ticks)
    assert packed["g"] == 700 and packed["w"] == 1 and packed["b"] == 5
    assert np.array_equal(cc.unpack(packed, len(ticks), where="x"), ticks)


def test_missing_column_takes_its_default_and_unknown_ones_are_ignored():
    cols = {"plain": np.array([1, 2, 3], "i8")}
    specs = (cc.ColumnSpec("plain", "i8"), cc.ColumnSpec("later", "i1", default=-1))
    encoded = cc.encode_columns(specs[:1], cols)
    encoded["from_the_future"] = {"w": 0, "b": 9}
    decoded = cc.decode_columns(specs, encoded, 3, path="t", offset=0)
    assert decoded["later"].tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    "bad",
    [
        {"w": 3, "b": 0, "d": b"\0" * 9},
        {"w": 1, "b": 0, "d": b"\0" * 2},
        {"w": 1, "b": 0},
        {"w": 0, "b": 1 << 70},
        {"w": 1, "b": 0, "g": 0, "d": b"\0\0\0"},
        "not a map",
    ],
)
def test_malformed_columns_are_input_errors(bad):
    with pytest.raises(InputError, match="bad column block"):
        cc.decode_columns((cc.ColumnSpec("x", "i8"),), {"x": bad}, 3, path="f.wskt", offset=99)


def test_value_outside_column_dtype_is_rejected():
    with pytest.raises(InputError, match="outside the range"):
        cc.decode_columns(
            (cc.ColumnSpec("x", "u1"),), {"x": {"w": 0, "b": 300}}, 2, path="f", offset=0
        )


def test_format_columns_only_depend_on_earlier_ones():
    cc.check_dependencies(CALL_COLUMNS)
    cc.check_dependencies(SEGMENT_COLUMNS)
    with pytest.raises(ValueError, match="depends on later"):
        cc.check_dependencies(
            (cc.ColumnSpec("a", "i8", "minus", base="b"), cc.ColumnSpec("b", "i8"))
        )
