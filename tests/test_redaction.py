"""Redaction keeps payload bytes out of a shared trace: no run of the source's payload
bytes (the capture's TCP streams as tshark reassembles them, or the bytes the recorder
logged) appears in the redacted file, neither as stored nor inside any decompressed block,
while the unredacted import of the same source does hold them (so the search can fail)."""

from __future__ import annotations

import zstandard

from wskreplay.formats.wskt import Codec, WsktFile
from wskreplay.recorder.etw_schema import read_recorder_events

from .conftest import REPO, run_cli
from .tshark_oracle import follow, stream_count

WINDOW = 16
SMB2 = REPO / "traces" / "captures" / "suricata-verify__smb2-01_smb2-peter.pcap"
FIELD = REPO / "traces" / "field.etl"


def _windows(data: bytes) -> set[bytes]:
    """Every WINDOW-byte run with at least 8 distinct byte values (runs of padding and
    small integers also occur in call columns, so they prove nothing)."""
    return {
        data[i : i + WINDOW]
        for i in range(len(data) - WINDOW + 1)
        if len(set(data[i : i + WINDOW])) >= 8
    }


def _file_contents(path) -> bytes:
    """The file as stored, then every block body decompressed."""
    parts = [path.read_bytes()]
    with WsktFile(path) as f:
        refs, damages = f.scan()
        assert not damages
        for ref in refs:
            stored = bytes(f.stored(ref))
            if ref.codec == Codec.ZSTD:
                stored = zstandard.ZstdDecompressor().decompress(
                    stored, max_output_size=ref.raw_len
                )
            parts.append(stored)
    return b"\0".join(parts)


def _leaks(payload_windows: set[bytes], trace) -> int:
    contents = _file_contents(trace)
    return sum(1 for w in _windows(contents) if w in payload_windows)


def _imported(tmp_path, *args: str):
    plain, redacted = tmp_path / "plain.wskt", tmp_path / "redacted.wskt"
    for out, extra in ((plain, ()), (redacted, ("--redact",))):
        proc = run_cli("import", *args, "-o", str(out), *extra)
        assert proc.returncode == 0, proc.stderr
    return plain, redacted


def test_no_payload_run_of_a_capture_survives_redaction(tmp_path):
    payload = b"".join(
        side
        for i in range(stream_count(str(SMB2)))
        for side in (follow(str(SMB2), i).from_node0, follow(str(SMB2), i).from_node1)
    )
    windows = _windows(payload)
    assert len(windows) > 10_000
    plain, redacted = _imported(tmp_path, str(SMB2), "--infer-calls")
    assert _leaks(windows, plain) > 10_000
    assert _leaks(windows, redacted) == 0


def test_no_payload_run_of_a_recording_survives_redaction(tmp_path):
    """The recorder's logged payload (the first bytes of each send) and the PktMon
    packets' TCP payload of the field recording."""
    logged = b"".join(e.fields.get("Payload", b"") for e in read_recorder_events(str(FIELD)))
    windows = _windows(logged)
    assert len(windows) > 1_000
    plain, redacted = _imported(tmp_path, str(FIELD))
    assert _leaks(windows, plain) > 1_000
    assert _leaks(windows, redacted) == 0
