"""Transport profiles: the emulator's answers where the WSK documentation leaves it open.

A profile is data (TOML), chosen by name (a file shipped in ``wskreplay/replayer/profiles``)
or by path. Every key is checked: an unknown key, a wrong type or an unknown status name is
a one-line error naming the file and the key. ``docs/emulator.md`` lists every setting.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from wskreplay.errors import InputError
from wskreplay.formats import ntstatus, wsk
from wskreplay.policies import RESET_ACCEPTANCE, ResetPolicy

PROFILES = Path(__file__).resolve().parent / "profiles"
DEFAULT_PROFILE = "windows-tcpip"
SEND_FLAGS = {"WSK_FLAG_OOB": wsk.WSK_FLAG_OOB, "WSK_FLAG_NODELAY": wsk.WSK_FLAG_NODELAY}


@dataclass(frozen=True)
class SendSettings:
    supported_flags: tuple[str, ...] = ("WSK_FLAG_NODELAY",)
    control_info_accepted: tuple[tuple[int, int], ...] = ()
    control_info_rejection: str = "STATUS_NOT_SUPPORTED"
    control_info_layout: str = "x64"
    wrong_state_status: str = "STATUS_INVALID_DEVICE_STATE"
    null_irp_status: str = "STATUS_INVALID_PARAMETER"
    zero_length: str = "complete"

    @property
    def flag_mask(self) -> int:
        mask = 0
        for name in self.supported_flags:
            mask |= SEND_FLAGS[name]
        return mask


@dataclass(frozen=True)
class CompletionSettings:
    policy: str = "on-ack"
    partial: bool = False
    order: str = "fifo"
    immediate_success: str = "as-recorded"
    latency_ns: int = 0
    """From the transport's condition (ACK or transmission) to the completion routine."""


@dataclass(frozen=True)
class TcpSettings:
    mss: int = 1460
    nagle: bool = True
    nagle_variant: str = "minshall"
    initial_cwnd_segments: int = 10
    rto_min_ns: int = 300_000_000
    rto_initial_ns: int = 1_000_000_000
    dupack_threshold: int = 3


@dataclass(frozen=True)
class TransportProfile:
    name: str
    description: str = ""
    send: SendSettings = SendSettings()
    completion: CompletionSettings = CompletionSettings()
    tcp: TcpSettings = TcpSettings()
    reset: ResetPolicy = ResetPolicy()
    source: str = ""
    """Where the profile came from (a path), for the replayed trace's metadata."""

    def with_changes(self, section: str, **changes: Any) -> TransportProfile:
        return replace(self, **{section: replace(getattr(self, section), **changes)})

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            **{
                section: {
                    f.name: _plain(getattr(getattr(self, section), f.name))
                    for f in fields(getattr(self, section))
                }
                for section in SECTIONS
            },
        }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


CHOICES = {
    ("send", "control_info_layout"): ("x64", "x86"),
    ("send", "zero_length"): ("complete", "pend"),
    ("completion", "policy"): ("on-ack", "on-transmit"),
    ("completion", "order"): ("fifo",),
    ("completion", "immediate_success"): ("never", "when-complete-at-once", "as-recorded"),
    ("tcp", "nagle_variant"): ("rfc896", "minshall"),
    ("reset", "acceptance"): RESET_ACCEPTANCE,
}
STATUS_KEYS = {
    ("send", "control_info_rejection"),
    ("send", "wrong_state_status"),
    ("send", "null_irp_status"),
}
NON_NEGATIVE_KEYS = {("completion", "latency_ns")}
SECTIONS = {
    "send": SendSettings,
    "completion": CompletionSettings,
    "tcp": TcpSettings,
    "reset": ResetPolicy,
}


def _check(path: str, section: str, key: str, value: Any, default: Any) -> Any:
    where = f"[{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(path, f"{where} must be true or false, not {value!r}")
        return value
    if isinstance(default, int):
        if (section, key) in NON_NEGATIVE_KEYS:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InputError(path, f"{where} must be an integer >= 0, not {value!r}")
            return value
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InputError(path, f"{where} must be a positive integer, not {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise InputError(path, f"{where} must be a string, not {value!r}")
        allowed = CHOICES.get((section, key))
        if allowed is not None and value not in allowed:
            raise InputError(path, f"{where} must be one of {', '.join(allowed)}, not {value!r}")
        if (section, key) in STATUS_KEYS and value not in ntstatus.CODES:
            raise InputError(path, f"{where}: unknown NTSTATUS name {value!r}")
        return value
    if key == "supported_flags":
        if not isinstance(value, list) or any(v not in SEND_FLAGS for v in value):
            raise InputError(path, f"{where} must list names from {', '.join(SEND_FLAGS)}")
        return tuple(value)
    if key == "control_info_accepted":
        ok = isinstance(value, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) for x in p)
            for p in value
        )
        if not ok:
            raise InputError(path, f"{where} must be a list of [level, type] integer pairs")
        return tuple((int(a), int(b)) for a, b in value)
    raise InputError(path, f"{where} has no checker")  # pragma: no cover - table is closed


def parse_profile(text: str, path: str) -> TransportProfile:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"not valid TOML: {exc}") from None
    return profile_from_dict(doc, path)


def profile_from_dict(doc: dict[str, Any], path: str) -> TransportProfile:
    """A profile from its tables (a parsed TOML file, or :meth:`TransportProfile.as_dict`
    without ``source`` sent by a replayer to an agent), every key checked."""
    if not isinstance(doc, dict):
        raise InputError(path, "a profile must be a table")
    unknown = set(doc) - {"name", "description", *SECTIONS}
    if unknown:
        raise InputError(path, f"unknown key(s) {sorted(unknown)}")
    name = doc.get("name", Path(path).stem)
    if not isinstance(name, str):
        raise InputError(path, "name must be a string")
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        table = doc.get(section, {})
        if not isinstance(table, dict):
            raise InputError(path, f"[{section}] must be a table")
        defaults = cls()
        known = {f.name for f in fields(cls)}
        extra = set(table) - known
        if extra:
            raise InputError(path, f"[{section}] unknown key(s) {sorted(extra)}")
        built[section] = replace(
            defaults,
            **{k: _check(path, section, k, v, getattr(defaults, k)) for k, v in table.items()},
        )
    return TransportProfile(
        name=name, description=str(doc.get("description", "")), source=path, **built
    )


def load_profile(name_or_path: str = DEFAULT_PROFILE) -> TransportProfile:
    """A shipped profile by name, or a TOML file by path."""
    if os.sep in name_or_path or name_or_path.endswith(".toml"):
        path = Path(name_or_path)
    else:
        path = PROFILES / f"{name_or_path}.toml"
        if not path.is_file():
            shipped = sorted(p.stem for p in PROFILES.glob("*.toml"))
            raise InputError(
                None, f"no profile named {name_or_path!r} (shipped: {', '.join(shipped)})"
            )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(str(path), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(str(path), "not UTF-8 text") from None
    shipped = path.resolve().parent == PROFILES
    return parse_profile(text, f"wskreplay/replayer/profiles/{path.name}" if shipped else str(path))
