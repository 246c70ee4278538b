"""A file's SHA-256 as traces record their sources': read in chunks, and on a thread beside
an import (the digest the trace records is the file's, for a real recording)."""

from __future__ import annotations

import hashlib

import pytest

from wskreplay.trace import read_trace
from wskreplay.trace.digest import CHUNK, DigestOnTheSide, file_sha256

from .conftest import REPO, run_cli


@pytest.mark.parametrize("size", [0, 1, CHUNK, 2 * CHUNK + 3])
def test_both_ways_equal_hashlib(tmp_path, size):
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path.write_bytes(data)
    assert file_sha256(path) == DigestOnTheSide(path).result() == hashlib.sha256(data).hexdigest()


def test_a_missing_file_raises_when_the_digest_is_asked_for(tmp_path):
    side = DigestOnTheSide(tmp_path / "gone.etl")
    with pytest.raises(FileNotFoundError):
        side.result()


def test_an_import_records_its_recording_digest(tmp_path):
    source = REPO / "traces" / "field.etl"
    out = tmp_path / "field.wskt"
    proc = run_cli("import", "--no-progress", str(source), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    [recorded] = read_trace(out).metadata["sources"]
    assert recorded == {
        "path": "field.etl",
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "bytes": source.stat().st_size,
    }
