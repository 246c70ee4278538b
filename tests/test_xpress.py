"""LZ77 XPRESS against an independent implementation (dissect.util's lzxpress)."""

from __future__ import annotations

import os
import random

import pytest
from dissect.util.compression import lzxpress
from hypothesis import given, settings
from hypothesis import strategies as st

from wskreplay.formats import xpress
from wskreplay.formats.etl import BUFFER_HEADER_SIZE, EtlFile

from .conftest import SHARED_DATA

random.seed(7)
SAMPLES = [
    b"",
    b"a",
    b"a" * 70_000,
    os.urandom(5000),
    bytes(random.choice(b"abcd") for _ in range(50_000)),
    b"WskSendEx " * 3000 + os.urandom(300),
]


COMPRESSORS = {"c": xpress.compress, "python": xpress.compress_python}


@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
@pytest.mark.parametrize("data", SAMPLES, ids=range(len(SAMPLES)))
def test_our_streams_decode_identically_in_both_decoders(data, compressor):
    packed = COMPRESSORS[compressor](data)
    assert xpress.decompress(packed, len(data)) == data
    assert xpress.decompress_python(packed, len(data)) == data
    assert lzxpress.decompress(packed)[: len(data)] == data


@given(
    st.binary(max_size=3000)
    | st.lists(st.sampled_from([b"ab", b"xyz", b"\0"]), max_size=900).map(b"".join)
)
@settings(max_examples=150, deadline=None)
def test_round_trip_property(data):
    assert xpress.decompress(xpress.compress(data), len(data)) == data
    assert xpress.decompress(xpress.compress_python(data), len(data)) == data


LONG = [
    os.urandom(140_000),
    b"\x07" * 200_000,
    (b"GET / HTTP/1.1\r\n" + os.urandom(40)) * 5000,
    bytes(random.choice(b"ab") for _ in range(100_000)),
]


@pytest.mark.parametrize("data", LONG, ids=range(len(LONG)))
def test_c_compressor_long_inputs_and_long_matches(data):
    packed = xpress.compress(data)
    assert lzxpress.decompress(packed)[: len(data)] == data


def test_every_compressed_buffer_of_the_samples_matches_dissect():
    checked = 0
    for path in sorted((SHARED_DATA / "etl").glob("*.etl")):
        etl = EtlFile(path)
        for b in etl.buffers:
            if b.compressed:
                raw = bytes(etl._data[b.offset + BUFFER_HEADER_SIZE : b.offset + b.size])
                ours = xpress.decompress(raw, b.fill - BUFFER_HEADER_SIZE)
                assert lzxpress.decompress(raw)[: len(ours)] == ours
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    "stream, size, what",
    [
        (b"\x00\x00\x00\x80" + b"\x08\x00", 10, "reaches before the output start"),
        (b"\x00\x00\x00\x00abc", 2, "past the expected"),
        (b"\x00\x00\x00\x00abc", 5, "decompressed to 3 bytes"),
        (b"\x00\x00\x00\x40" + b"a\x07", 20, "cut short"),
    ],
)
def test_invalid_streams(stream, size, what):
    with pytest.raises(xpress.XpressError, match=what):
        xpress.decompress(stream, size)


def _outcome(fn, data: bytes, size: int):
    try:
        return ("ok", fn(data, size))
    except xpress.XpressError as exc:
        return ("error", str(exc))


def test_the_c_accelerator_is_built_where_a_compiler_is():
    import shutil

    if shutil.which("cc") or shutil.which("gcc"):
        assert xpress.ACCELERATED


def test_c_and_python_agree_on_every_sample_buffer():
    for path in sorted((SHARED_DATA / "etl").glob("*")):
        if "diaghub" in path.name:
            continue
        etl = EtlFile(path)
        for b in etl.buffers:
            if b.compressed:
                raw = bytes(etl._data[b.offset + BUFFER_HEADER_SIZE : b.offset + b.size])
                size = b.fill - BUFFER_HEADER_SIZE
                assert xpress.decompress(raw, size) == xpress.decompress_python(raw, size)


@given(st.binary(max_size=400), st.integers(0, 2000))
@settings(max_examples=400, deadline=None)
def test_c_and_python_agree_on_any_input_even_invalid(data, size):
    assert _outcome(xpress.decompress, data, size) == _outcome(xpress.decompress_python, data, size)


@given(st.binary(min_size=1, max_size=2000), st.integers(0, 40), st.integers(0, 255))
@settings(max_examples=200, deadline=None)
def test_c_and_python_agree_on_corrupted_valid_streams(data, where, value):
    packed = bytearray(xpress.compress(data))
    packed[where % len(packed)] = value
    packed = bytes(packed)
    assert _outcome(xpress.decompress, packed, len(data)) == _outcome(
        xpress.decompress_python, packed, len(data)
    )
