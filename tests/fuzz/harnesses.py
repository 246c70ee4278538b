"""One fuzz harness per parser: bytes in, the parser run to the end, and only the error type
that parser documents allowed out. Anything else escaping (IndexError, struct.error,
MemoryError, RecursionError, ...) is a bug, and the fuzzer reports it as a crash.

Parsers that read files get the bytes through a file in ``/dev/shm``, rewritten for every
input, so the code under test is the code a user runs (mmap included).
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wskreplay.agent import protocol
from wskreplay.agent.server import AgentLimits, Client
from wskreplay.errors import InputError, TargetError
from wskreplay.formats import tracelogging, wsk, xpress
from wskreplay.formats.etl import EtlFile
from wskreplay.formats.etl_packets import etl_frames
from wskreplay.formats.pcap import read_frames
from wskreplay.formats.tcpip import decode_tcp
from wskreplay.formats.wskt import WsktFile
from wskreplay.tracefile import TraceReader, verify

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
CRASHES = HERE / "crashes"
AGENT_TOKEN = "fuzz-token-0123456789"


@dataclass(frozen=True)
class Harness:
    name: str
    run: Callable[[bytes], None]
    max_len: int
    """Longest input the fuzzer makes (libFuzzer's -max_len)."""


class _ScratchFile:
    """A path whose contents are replaced by each input."""

    def __init__(self, suffix: str) -> None:
        directory = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, self.path = tempfile.mkstemp(prefix="wskreplay-fuzz-", suffix=suffix, dir=directory)
        os.close(fd)

    def holding(self, data: bytes) -> str:
        with open(self.path, "wb") as f:
            f.write(data)
        return self.path


_scratch: dict[str, _ScratchFile] = {}


def _file(data: bytes, suffix: str) -> str:
    if suffix not in _scratch:
        _scratch[suffix] = _ScratchFile(suffix)
    return _scratch[suffix].holding(data)


def capture(data: bytes) -> None:
    """pcap and pcapng (and gzip of either): the record walk, then every frame's headers."""
    try:
        frames = read_frames(_file(data, ".pcap"))
    except InputError:
        return
    for i in range(len(frames)):
        frames.frame(i).tobytes()
    decode_tcp(frames)


def etl(data: bytes) -> None:
    """The ETL buffer walk (compressed buffers inflated), every record decoded, PktMon and
    NDIS packets assembled into frames and their headers decoded."""
    try:
        log = EtlFile(_file(data, ".etl"))
        log.count_records()
        frames = etl_frames(log.path, etl=log, other=lambda event: None)
    except InputError:
        return
    decode_tcp(frames)


def xpress_decompress(data: bytes) -> None:
    """The C accelerator and the Python decoder agree on every input: same bytes out, or
    both refuse it. The first 2 bytes give the promised size (at most 64 KiB)."""
    if len(data) < 2:
        return
    size, body = struct.unpack_from("<H", data)[0], data[2:]
    outcomes = []
    for decode in (xpress.decompress, xpress.decompress_python):
        try:
            outcomes.append(decode(body, size))
        except xpress.XpressError:
            outcomes.append(None)
    assert outcomes[0] == outcomes[1], f"C and Python decoders differ on size {size}"


def xpress_roundtrip(data: bytes) -> None:
    """Whatever either compressor writes, both decoders give back exactly."""
    packed = [xpress.compress(data), xpress.compress_python(data)]
    for blob in packed:
        assert xpress.decompress(blob, len(data)) == data
        assert xpress.decompress_python(blob, len(data)) == data


def tracelogging_metadata(data: bytes) -> None:
    """An event-schema item then a payload (the 2-byte size at the front splits them)."""
    if len(data) < 2:
        return
    cut = min(struct.unpack_from("<H", data)[0], len(data) - 2)
    schema, payload = data[2 : 2 + cut], data[2 + cut :]
    try:
        tracelogging.provider_name(schema)
        tracelogging.decode(schema, payload)
        tracelogging.decode(schema, payload, pointer_size=4)
    except tracelogging.TraceLoggingError:
        pass


def cmsghdr(data: bytes) -> None:
    """A ControlInfo buffer in both layouts; what decodes encodes back to the same bytes
    when every message is aligned."""
    for layout in (wsk.X64, wsk.X86):
        try:
            messages = wsk.decode_cmsgs(data, layout)
        except InputError:
            continue
        again = wsk.encode_cmsgs(messages, layout)
        assert wsk.decode_cmsgs(again, layout) == messages
    try:
        wsk.decode_sockaddr(data)
    except ValueError:
        pass


def wskt(data: bytes) -> None:
    """A .wskt file: header, block walk from the footer's index, or a scan; every block
    decoded; verify."""
    path = _file(data, ".wskt")
    try:
        with WsktFile(path) as f:
            refs, _damage = f.scan()
            for ref in refs:
                try:
                    f.body(ref)
                except InputError:
                    pass
            f.trailer_index_offset()
    except InputError:
        return
    for mode in ("index", "scan"):
        try:
            with TraceReader(path, mode=mode) as reader:
                reader.read()
        except InputError:
            pass
    try:
        verify(path)
    except InputError:
        pass


def agent_messages(data: bytes) -> None:
    """Frames as the agent reads them from a client: framing, msgpack limits; a ``hello``
    (given the right token and version, so its transport profile is what gets checked);
    the field checks; and every ``events`` list decoded as the replayer decodes the agent's.
    No message is dispatched (an ``open`` would connect somewhere)."""
    server, client = socket.socketpair()
    try:
        client.sendall(data[: 1 << 16])
        client.shutdown(socket.SHUT_WR)
        server.setblocking(False)
        agent = Client(server, AGENT_TOKEN, AgentLimits(max_frame=1 << 16))
        while True:
            try:
                message = protocol.read_message(server, 1 << 16)
            except protocol.ProtocolError:
                return
            _agent_message(agent, message)
    finally:
        server.close()
        client.close()


def _agent_message(agent: Client, message: dict) -> None:
    try:
        if message["op"] == "hello":
            agent._hello({**message, "token": AGENT_TOKEN, "version": protocol.VERSION})
    except (TargetError, InputError, BlockingIOError):
        pass
    finally:
        if agent.session is not None:
            agent.session.shutdown()
            agent.session = None
    for name, kind in (("socket", int), ("flags", int), ("payload", bytes), ("host", str)):
        try:
            protocol.field(message, name, kind)
        except protocol.ProtocolError:
            pass
    events = message.get("events")
    if isinstance(events, list):
        for item in events:
            try:
                protocol.event_from_wire(item, 0)
            except protocol.ProtocolError:
                pass


HARNESSES = {
    h.name: h
    for h in (
        Harness("pcap", capture, 1 << 16),
        Harness("pcapng", capture, 1 << 16),
        Harness("etl", etl, 1 << 18),
        Harness("xpress", xpress_decompress, 1 << 14),
        Harness("xpress-roundtrip", xpress_roundtrip, 1 << 12),
        Harness("tracelogging", tracelogging_metadata, 1 << 12),
        Harness("cmsghdr", cmsghdr, 1 << 12),
        Harness("wskt", wskt, 1 << 16),
        Harness("agent", agent_messages, 1 << 16),
    )
}


def inputs(name: str) -> list[Path]:
    """The saved corpus and every crash input of harness ``name``."""
    dirs = [CORPUS / name, CRASHES / name]
    return sorted(p for d in dirs if d.is_dir() for p in d.iterdir() if p.is_file())
