"""tshark's own TCP reassembly, as the independent oracle for ``wskreplay streams``."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from dataclasses import dataclass


@dataclass
class FollowedStream:
    node0: str
    node1: str
    from_node0: bytes
    from_node1: bytes


def _tshark(*args: str) -> str:
    proc = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=300)
    return proc.stdout


@functools.cache
def stream_count(path: str, decode_as: tuple[str, ...] = ()) -> int:
    """TCP streams tshark finds (``decode_as``: its ``-d`` rules, e.g. a tunnel's port)."""
    out = _tshark("-r", path, *_rules(decode_as), "-T", "fields", "-e", "tcp.stream")
    ids = {i for line in out.split() for i in line.split(",") if i}
    return len(ids)


@functools.cache
def frame_protocols(path: str, decode_as: tuple[str, ...] = ()) -> list[list[str]]:
    """Each frame's protocol stack as tshark dissects it (``frame.protocols``)."""
    out = _tshark("-r", path, *_rules(decode_as), "-T", "fields", "-e", "frame.protocols")
    return [line.split(":") for line in out.splitlines()]


def _rules(decode_as: tuple[str, ...]) -> list[str]:
    return [arg for rule in decode_as for arg in ("-d", rule)]


FOLLOWS_PER_RUN = 200


def follow(path: str, index: int, decode_as: tuple[str, ...] = ()) -> FollowedStream:
    """Bytes of each direction as ``tshark -z follow,tcp,raw,N`` prints them."""
    return _followed(path, decode_as, index // FOLLOWS_PER_RUN)[index]


@functools.cache
def _followed(path: str, decode_as: tuple[str, ...], batch: int) -> dict[int, FollowedStream]:
    """One tshark run follows a batch of streams (each section names its stream)."""
    lo = batch * FOLLOWS_PER_RUN
    wanted = range(lo, min(lo + FOLLOWS_PER_RUN, stream_count(path, decode_as)))
    args = [arg for i in wanted for arg in ("-z", f"follow,tcp,raw,{i}")]
    out = _tshark("-r", path, *_rules(decode_as), "-q", *args) if args else ""
    found: dict[int, FollowedStream] = {}
    index = -1
    nodes: dict[int, str] = {}
    data = {0: bytearray(), 1: bytearray()}
    for line in out.splitlines():
        if line.startswith("Filter: tcp.stream eq "):
            index = int(line.rsplit(" ", 1)[1])
            nodes, data = {}, {0: bytearray(), 1: bytearray()}
        elif line.startswith("Node 0: "):
            nodes[0] = line[8:].strip()
        elif line.startswith("Node 1: "):
            nodes[1] = line[8:].strip()
        elif line.startswith("====") and index >= 0:
            if len(nodes) == 2 or data[0] or data[1]:
                found[index] = FollowedStream(
                    nodes.get(0, ""), nodes.get(1, ""), bytes(data[0]), bytes(data[1])
                )
                index = -1
        elif len(nodes) == 2 and line and index >= 0:
            side = 1 if line.startswith("\t") else 0
            data[side] += bytes.fromhex(line.strip())
    for i in wanted:
        found.setdefault(i, FollowedStream("", "", b"", b""))
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
