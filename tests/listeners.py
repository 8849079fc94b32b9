"""Which addresses processes listen on, read from /proc (Linux): for tests that check servers bind loopback."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Iterator
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


def _listening_sockets() -> dict[str, str]:
    """socket inode -> "address:port" of every listening TCP socket in this network namespace."""
    found = {}
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state != _LISTEN:
                    continue
                hex_ip, hex_port = local.split(":")
                raw = bytes.fromhex(hex_ip)
                # /proc prints each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                ip = ipaddress.IPv4Address(words) if family == 4 else ipaddress.IPv6Address(words)
                found[inode] = f"{ip}:{int(hex_port, 16)}"
    return found


def listeners(title: str) -> dict[str, set[str]]:
    """Listening addresses of the processes whose command line contains ``title``, by pid."""
    sockets = _listening_sockets()
    out: dict[str, set[str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if title not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inode = target[len("socket:[") : -1]
                    if inode in sockets:
                        out.setdefault(proc.name, set()).add(sockets[inode])
    return out


@contextlib.contextmanager
def watch_listeners(title: str, every: float = 0.5) -> Iterator[set[str]]:
    """Collect, while the block runs, every address that processes titled ``title`` listen on."""
    seen: set[str] = set()
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for addresses in listeners(title).values():
                seen.update(addresses)
            stop.wait(every)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.rsplit(":", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
