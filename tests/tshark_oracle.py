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
def stream_count(path: str) -> int:
    out = _tshark("-r", path, "-T", "fields", "-e", "tcp.stream")
    ids = {i for line in out.split() for i in line.split(",") if i}
    return len(ids)


@functools.cache
def follow(path: str, index: int) -> FollowedStream:
    """Bytes of each direction as ``tshark -z follow,tcp,raw,N`` prints them."""
    out = _tshark("-r", path, "-q", "-z", f"follow,tcp,raw,{index}")
    nodes: dict[int, str] = {}
    data = {0: bytearray(), 1: bytearray()}
    for line in out.splitlines():
        if line.startswith("Node 0: "):
            nodes[0] = line[8:].strip()
        elif line.startswith("Node 1: "):
            nodes[1] = line[8:].strip()
        elif len(nodes) == 2 and line and not line.startswith("="):
            side = 1 if line.startswith("\t") else 0
            data[side] += bytes.fromhex(line.strip())
    return FollowedStream(nodes.get(0, ""), nodes.get(1, ""), bytes(data[0]), bytes(data[1]))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
