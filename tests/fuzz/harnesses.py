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

import numpy as np

from tests.decode_oracle import both_decodes
from tests.etl_outcome import both_passes
from tests.reassembly_oracle import assert_same, both
from wskreplay.agent.server import AgentLimits, Client
from wskreplay.diff import UNREAD_COLUMNS
from wskreplay.errors import InputError, TargetError
from wskreplay.formats import agentwire as protocol
from wskreplay.formats import event_metadata, pcap, pieces, pktmon, tracelogging, wsk, xpress
from wskreplay.formats.etl import EtlFile
from wskreplay.formats.etl_packets import etl_frames
from wskreplay.formats.pcap import read_frames
from wskreplay.formats.tcpip import DecodeOptions, decode
from wskreplay.formats.wskt import WsktFile
from wskreplay.recorder import tcp
from wskreplay.recorder.capture_streams import capture_streams, streams_of_file
from wskreplay.replayer.targets.agent import event_from_wire
from wskreplay.trace import Trace, TraceReader, verify, write_trace
from wskreplay.trace.inplace import check_unread, window

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
    """pcap and pcapng (and gzip of either): the record walk, then every frame's headers,
    then the connections reassembled at once and one at a time (the same in every field),
    and their streams hashed by the C hashing and by the Python reference (the same
    digests); and ``streams``' document the same whole, a few segments at a time, and with
    the file read in slices."""
    try:
        frames = read_frames(_file(data, ".pcap"))
    except InputError:
        return
    for i in range(len(frames)):
        frames.frame(i).tobytes()
    decode(frames)
    try:
        result = tcp.reassemble(frames)
    except InputError:
        return
    assert_same(*both(frames))
    native = [
        d.sha256(result.buffer) for c in result.connections for d in (c.to_server, c.to_client)
    ]
    reference = [
        pieces.sha256_reference(result.buffer, d.pieces.at, d.pieces.length, 0, lambda n: None)
        for c in result.connections
        for d in (c.to_server, c.to_client)
    ]
    assert native == reference, "the C hashing and the reference differ"
    whole = capture_streams(frames, tcp.CaptureOptions(), windowed_frames=1 << 40).document
    windowed = capture_streams(
        frames, tcp.CaptureOptions(), windowed_frames=0, window_segments=3, decode_chunk=5
    ).document
    assert windowed == whole, "streams a window at a time differ from the whole capture's"
    sliced = streams_of_file(
        frames.path, tcp.CaptureOptions(), windowed_file_bytes=0, window_segments=3
    )
    assert sliced.document == whole, "streams of the file in slices differ from the whole's"
    assert str(sliced.frames.error) == str(frames.error)


def etl(data: bytes) -> None:
    """The ETL buffer walk (compressed buffers inflated), every record decoded, PktMon and
    NDIS packets assembled into frames and their headers decoded; the batch pass (tried
    whatever the share of packets) gives what the reference pass gives, error included."""
    path = _file(data, ".etl")
    fast, reference, _ = both_passes(path)
    assert fast == reference, "the batch pass and the reference pass differ"
    try:
        log = EtlFile(path)
        log.count_records()
        frames = etl_frames(log.path, etl=log, other=lambda event: None)
    except InputError:
        return
    decode(frames)


LINK_FAMILIES = {
    "ethernet-tunnels": (1,),
    "ieee80211": (127, 192, 119, 163, 105),
    "other-links": (7, 129, 113, 276, 0, 108, 9, 50, 51, 101, 104, 228, 229, 239, 258),
}
FUZZ_TUNNELS = DecodeOptions((("vxlan", 8472), ("geneve", 6082)))
FUZZ_CHUNK = 3
"""Chunks this small let the walk name the plain paths first and the C pass take later
frames (it only gives paths the walk has named)."""


def frames_of(data: bytes, linktypes: tuple[int, ...]) -> pcap.Frames:
    """Frames built from fuzz bytes: the first byte picks each frame's link type among
    ``linktypes``, then 2-byte lengths split the rest into frames (bounded by what is
    there)."""
    offsets, lengths, kinds = [], [], []
    at = 0
    while at + 3 <= len(data):
        kind = linktypes[data[at] % len(linktypes)]
        size = min(struct.unpack_from("<H", data, at + 1)[0], len(data) - at - 3)
        offsets.append(at + 3)
        lengths.append(size)
        kinds.append(kind)
        at += 3 + size
    n = len(offsets)
    return pcap.Frames(
        path="<fuzz>",
        format="pcap",
        buffer=memoryview(data),
        time_ns=np.arange(n, dtype=np.int64) * 1000,
        interface=np.zeros(n, np.int32),
        linktype=np.array(kinds, np.int32),
        offset=np.array(offsets, np.int64),
        caplen=np.array(lengths, np.int64),
        origlen=np.array(lengths, np.int64),
        direction=np.zeros(n, np.uint8),
        interfaces=[pcap.Interface(linktypes[0])],
    )


def _decoder(family: str) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        """Frames of these link types through the whole walk (tunnels, fragments and
        A-MSDUs included): every frame counted once, no exception at all; in small chunks,
        the same decode with the C pass over plain frames as without."""
        frames = frames_of(data, LINK_FAMILIES[family])
        decoded = decode(frames, FUZZ_TUNNELS)
        assert decoded.report.totals.read == len(frames)
        native, walk_alone = both_decodes(frames, FUZZ_CHUNK, FUZZ_TUNNELS)
        assert native == walk_alone, "the C pass changed the decode"
        for i in range(len(decoded.segments)):
            at = int(decoded.segments.payload_offset[i])
            decoded.buffer[at : at + int(decoded.segments.captured_len[i])]

    run.__name__ = family.replace("-", "_")
    return run


def pktmon_schema(data: bytes) -> None:
    """A TRACE_EVENT_INFO as PktMon's layouts are taken from it: decoded, turned into a
    packet layout (or refused), and used to read the rest as a component event."""
    try:
        schema = event_metadata.decode_event_info(data, "<fuzz>", 0)
    except InputError:
        return
    for event_id in (pktmon.PACKET, pktmon.COMPONENT, pktmon.COMPONENT_PROPERTY, pktmon.EDGE):
        typed = event_metadata.EventSchema(
            pktmon.PROVIDER, event_id, schema.version, schema.properties
        )
        try:
            if event_id == pktmon.PACKET:
                layout = pktmon.packet_layout(typed, "<fuzz>")
                if len(data) >= layout.fixed.size:
                    layout.unpack(data)
            else:
                pktmon.component_values(typed, data, "<fuzz>", 0)
        except InputError:
            pass
    pktmon.network_bytes(data, data[0] if data else 1)


def xpress_decompress(data: bytes) -> None:
    """The C accelerator and the Python decoder agree on every input: same bytes out, or
    both refuse it. The first 2 bytes give the promised size (at most 64 KiB)."""
    if len(data) < 2:
        return
    size, body = struct.unpack_from("<H", data)[0], data[2:]
    outcomes = []
    for inflate in (xpress.decompress, xpress.decompress_python):
        try:
            outcomes.append(inflate(body, size))
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
    except tracelogging.TraceLoggingError:
        pass
    for pointer_size in (8, 4):
        outcomes = []
        for decode_one in (tracelogging.decode, _decode_reference):
            try:
                outcomes.append(repr(decode_one(schema, payload, pointer_size)))
            except tracelogging.TraceLoggingError as exc:
                outcomes.append(str(exc))
        assert outcomes[0] == outcomes[1], "the planned decode and the reference differ"


def _decode_reference(schema: bytes, payload: bytes, pointer_size: int) -> tuple:
    return tracelogging.decode_reference(
        tracelogging.parse_schema(bytes(schema)), payload, pointer_size
    )


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
    whole = None
    for mode in ("index", "scan"):
        try:
            with TraceReader(path, mode=mode) as reader:
                trace = reader.read()
                whole = trace if mode == "index" else whole
        except InputError:
            pass
    _wskt_in_place(path, whole)
    try:
        verify(path)
    except InputError:
        pass


def _wskt_in_place(path: str, whole: Trace | None) -> None:
    """Read as ``diff`` reads (streams in place, columns deferred): it fails exactly where
    the whole read fails, and otherwise sees the same trace."""
    try:
        reader = TraceReader(path)
    except InputError:
        assert whole is None
        return
    try:
        trace = reader.read(streams="in-place", defer=UNREAD_COLUMNS)
        check_unread(trace.streams.values())
        same = trace.calls == whole.calls and trace.segments == whole.segments if whole else False
        for key, stream in trace.streams.items():
            mine = bytes(window(stream.data, 0, stream.length)) if stream.data is not None else None
            theirs = whole.streams[key].data if whole is not None else None
            same = same and mine == (bytes(theirs) if theirs is not None else None)
        assert whole is not None and same, "the in-place read differs from the whole read"
        assert _written(trace) == _written(whole), "written from the file, the streams differ"
    except InputError:
        assert whole is None, "the in-place read failed where the whole read did not"
        return
    finally:
        reader.close()


def _written(trace: Trace) -> bytes:
    """The trace as ``write_trace`` writes it, with chunks cut across the input's (a
    stream left in its file is copied a chunk at a time, as ``replay`` writes it)."""
    out = _file(b"", ".written.wskt")
    write_trace(out, trace, stream_chunk=777)
    return Path(out).read_bytes()


def agent_messages(data: bytes) -> None:
    """Frames as the agent reads them from a client: framing, msgpack limits; a ``hello``
    or ``auth`` taken as an authenticated client's (so its transport profile is checked);
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
        if message["op"] in ("hello", "auth"):
            agent.start(message)
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
                event_from_wire(item, 0)
            except protocol.ProtocolError:
                pass


def agent_wire_c(data: bytes) -> None:
    """The C agent's decoder and frame tag (testdriver/wire.c) against the Python
    reference's: the same bodies accepted, the same refused, the same tag."""
    from tests import wire_c

    try:
        protocol.decode(data)
        reference = None
    except protocol.ProtocolError as exc:
        reference = str(exc)
    refused = wire_c.check(data, protocol.MAX_FRAME)
    if (refused is None) != (reference is None):
        raise AssertionError(f"C: {refused or 'accepted'}; Python: {reference or 'accepted'}")
    key = bytes(range(32))
    if wire_c.frame_tag(key, b"C", len(data), data) != protocol.frame_tag(
        key, b"C", len(data), data
    ):
        raise AssertionError("the C frame tag differs")


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
        Harness("agent-wire-c", agent_wire_c, 1 << 16),
        *(Harness(family, _decoder(family), 1 << 14) for family in LINK_FAMILIES),
        Harness("pktmon-schema", pktmon_schema, 1 << 12),
    )
}


def inputs(name: str) -> list[Path]:
    """The saved corpus and every crash input of harness ``name``."""
    dirs = [CORPUS / name, CRASHES / name]
    return sorted(p for d in dirs if d.is_dir() for p in d.iterdir() if p.is_file())
