"""The .wskt blocks' CRC-32 from ISA-L (python-isal) equals zlib's, the reference, on
generated buffers of every size and starting value; the command line takes ISA-L's unless
the references are asked for, and writes the same file either way."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import zlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib

from .conftest import run_cli


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=5000), start=st.integers(0, 2**32 - 1))
def test_isal_gives_zlib_s_crc(data, start):
    assert isal_zlib.crc32(data, start) == zlib.crc32(data, start)
    assert isal_zlib.crc32(data) == zlib.crc32(data)


def test_large_and_mapped_buffers():
    rng = np.random.default_rng(20)
    for size in (0, 1, 15, 16, 63, 64, 65, 4095, (1 << 20) + 7, 48 << 20):
        data = rng.bytes(size)
        with mmap.mmap(-1, max(size, 1)) as mapped:
            mapped[:size] = data
            view = memoryview(mapped)[:size]
            assert isal_zlib.crc32(view) == zlib.crc32(data), size
            view.release()


def _source(env: dict[str, str]) -> str:
    code = "from wskreplay.formats.checksum import CRC32_SOURCE; print(CRC32_SOURCE)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return proc.stdout.strip()


def test_the_fast_crc_is_taken_unless_the_references_are_asked_for(tmp_path, monkeypatch):
    """Each way writes the same file, and the other way reads it as intact."""
    monkeypatch.delenv("WSKREPLAY_PURE_PYTHON", raising=False)
    assert _source(dict(os.environ)) == "isal"
    assert _source({**os.environ, "WSKREPLAY_PURE_PYTHON": "1"}) == "zlib"
    written = []
    for pure, other in (("0", "1"), ("1", "0")):
        out = tmp_path / f"{pure}.wskt"
        monkeypatch.setenv("WSKREPLAY_PURE_PYTHON", pure)
        proc = run_cli("synth", "--calls", "2000", "--seed", "3", "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        monkeypatch.setenv("WSKREPLAY_PURE_PYTHON", other)
        assert run_cli("verify", str(out)).returncode == 0
        written.append(out.read_bytes())
    assert written[0] == written[1]
