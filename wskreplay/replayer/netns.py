"""Network namespaces, TAP devices and the ``ip`` command, for the socket target.

Everything created here is removed by the same context manager that created it, on
success, on an error and on SIGINT/SIGTERM (see :func:`terminating_raises`). A namespace is
named ``wskr-<role>-<pid>-<n>`` so a leftover (after SIGKILL) is recognisable and
:func:`remove_stale` can clear namespaces whose process is gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import itertools
import os
import signal
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wskreplay.errors import TargetError, Terminated

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
PREFIX = "wskr-"
_counter = itertools.count()


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise TargetError(
            f"{what} needs root (network namespaces); run as root or use --topology loopback"
        )


def run(*cmd: str, timeout: float = 30) -> str:
    """Run a setup command; its stdout. A failure is a TargetError naming the command."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise TargetError(f"{cmd[0]}: not installed (needed by the socket target)") from None
    except subprocess.TimeoutExpired:
        raise TargetError(f"{' '.join(cmd)}: no answer in {timeout:g} s") from None
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise TargetError(f"{' '.join(cmd)}: {reason[0] if reason else f'exit {done.returncode}'}")
    return done.stdout


def in_namespace(ns: str | None, *cmd: str) -> list[str]:
    """``cmd`` run inside namespace ``ns`` (as it is when ``ns`` is None)."""
    return list(cmd) if ns is None else ["ip", "netns", "exec", ns, *cmd]


def unique_name(role: str) -> str:
    return f"{PREFIX}{role}-{os.getpid()}-{next(_counter)}"


@contextmanager
def namespace(role: str) -> Iterator[str]:
    """A new network namespace with its loopback up; deleted on exit."""
    name = unique_name(role)
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        delete_namespace(name)


def delete_namespace(name: str) -> None:
    """Delete ``name`` (and with it every device inside), killing what still runs there."""
    pids = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def remove_stale() -> list[str]:
    """Delete the namespaces an earlier, killed wskreplay left behind (their creating
    process no longer exists); the names removed."""
    removed = []
    for path in NETNS_DIR.glob(f"{PREFIX}*") if NETNS_DIR.is_dir() else ():
        parts = path.name.split("-")
        if len(parts) >= 4 and parts[2].isdigit() and not Path(f"/proc/{parts[2]}").exists():
            delete_namespace(path.name)
            removed.append(path.name)
    return removed


def open_tap(name: str) -> int:
    """A new TAP device ``name`` (Ethernet frames, no packet-info header) in the calling
    thread's namespace; the descriptor, non-blocking. The device disappears when the last
    descriptor is closed."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise TargetError(
            f"/dev/net/tun: cannot create TAP device {name}: {exc.strerror}"
        ) from None
    return fd


_libc: Any = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise TargetError(f"setns: {os.strerror(err)}")


@contextmanager
def entered(ns: str | None) -> Iterator[None]:
    """The calling thread inside namespace ``ns`` meanwhile (sockets created meanwhile stay
    in it); nothing happens when ``ns`` is None."""
    if ns is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_DIR / ns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


@contextmanager
def terminating_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` meanwhile and SIGINT KeyboardInterrupt, so every
    ``finally`` of a replay runs when it is stopped. A signal whose exception was swallowed
    (raised while Python ran a finaliser, which only prints it) is raised again when the
    body ends: a stopped replay never completes as if it had not been stopped."""
    received: list[int] = []

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    try:
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Terminated() if received[0] == signal.SIGTERM else KeyboardInterrupt()
