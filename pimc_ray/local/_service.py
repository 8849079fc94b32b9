"""What the project's local servers share: ``with Server(...) as server:`` starts one and always stops it; free
ports on loopback, and waiting for a server to answer."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from types import TracebackType
from typing import Self

from pimc_ray.errors import PimcError


class LocalService:
    """A process the project starts itself (STAC API, SeaweedFS, Ray head) and stops on leaving the block."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_port_free(port: int, *, what: str = "--port") -> None:
    """Refuse a port that something already listens on (a server started there would fail, while the one that
    holds the port answers in its place).

    Raises:
        PimcError: one line naming the port and the fix.
    """
    with socket.socket() as sock:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # a closed server's TIME_WAIT is no listener
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            raise PimcError(
                f"{what} {port}: 127.0.0.1:{port} is already in use ({err.strerror}); stop what listens there or "
                "choose another port"
            ) from err


def wait_until_up(
    url: str,
    *,
    timeout: float = 20.0,
    process: subprocess.Popen[bytes] | None = None,
    name: str = "the local STAC server",
) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``timeout`` seconds pass.

    Raises:
        PimcError: the process exited, or nothing answered in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise PimcError(f"{name} exited with code {process.returncode} before answering")
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise PimcError(f"{name} did not answer at {url} within {timeout:.0f} s")
