"""What reading an ``.etl``'s packets gives, whole: for comparing the batch pass
(formats/etl_batch.py) with the reference pass, in tests and in the ``etl`` fuzz harness."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from wskreplay.errors import InputError
from wskreplay.formats import etl_batch, etl_packets
from wskreplay.formats.etl import EtlEvent


@contextmanager
def pass_taken(reference: bool) -> Iterator[list[bool]]:
    """Reading with the reference (``WSKREPLAY_PURE_PYTHON=1``) or with the batch pass tried
    on any file, however few packets it holds (``PACKET_SHARE`` 0); yields where the batch
    pass's answers go (True: it gave the result)."""
    answers: list[bool] = []
    read = etl_batch.read

    def spy(*args, **kwargs) -> bool:
        answers.append(read(*args, **kwargs))
        return answers[-1]

    with pytest.MonkeyPatch.context() as m:
        m.setenv("WSKREPLAY_PURE_PYTHON", "1" if reference else "0")
        m.setattr(etl_batch, "PACKET_SHARE", 0)
        m.setattr(etl_batch, "read", spy)
        yield answers


def read_outcome(path: str | os.PathLike) -> tuple:
    """Every column of the frames, a digest of their bytes, the notes and skipped counts and
    every other event in the order it was handed on; or the error."""
    handed: list[EtlEvent] = []
    try:
        frames = etl_packets.etl_frames(str(path), other=handed.append)
    except InputError as exc:
        return ("error", str(exc))
    columns = {
        name: getattr(frames, name).tolist()
        for name in ("time_ns", "interface", "linktype", "offset", "caplen", "origlen", "direction")
    }
    return (
        columns,
        frames.interfaces,
        hashlib.sha256(bytes(frames.buffer)).hexdigest(),
        frames.notes,
        frames.skipped,
        handed,
    )


def both_passes(path: str | os.PathLike) -> tuple[tuple, tuple, bool]:
    """(batch outcome, reference outcome, whether the batch pass gave its outcome)."""
    with pass_taken(reference=False) as answers:
        fast = read_outcome(path)
    with pass_taken(reference=True):
        reference = read_outcome(path)
    return fast, reference, bool(answers and answers[-1])
