"""A fault-injecting HTTP file server for asset reads (loopback only, Range requests supported).

It serves the files under ``root`` as GDAL reads COGs over HTTP: HEAD, GET, and ``Range: bytes=a-b`` answered
with 206 Partial Content. A fault plan makes some requests fail the way networks and object stores do:
``every``-th request of a kind answers 503 (``"503"``), closes the connection without an answer (``"drop"``), or
sends half its body (``"truncate"``). ``requests`` and ``faults`` count what happened.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class FaultyFileServer:
    def __init__(self, root: Path, *, fault: str | None = None, every: int = 3) -> None:
        if fault not in (None, "503", "drop", "truncate"):
            raise ValueError(f"unknown fault {fault!r}")
        self.root, self.fault, self.every = root.resolve(), fault, every
        self.requests = 0
        self.faults = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _answer(self, *, body: bool) -> None:
                path = (server.root / self.path.lstrip("/").split("?")[0]).resolve()
                if server.root not in path.parents or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                fault = server._next_fault() if body else None
                if fault == "503":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                data = path.read_bytes()
                match = _RANGE.fullmatch(self.headers.get("Range", ""))
                if match:
                    start = int(match.group(1))
                    end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
                    part = data[start : end + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    part = data
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(part)))
                self.send_header("Content-Type", "image/tiff")
                self.end_headers()
                if body:
                    if fault == "truncate":
                        self.wfile.write(part[: len(part) // 2])
                        self.close_connection = True
                        self.connection.close()
                        return
                    self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _next_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            if self.fault is not None and self.requests % self.every == 0:
                self.faults += 1
                return self.fault
            return None

    def href(self, path: Path) -> str:
        """The URL of a file under the root."""
        return f"{self.url}/{path.resolve().relative_to(self.root).as_posix()}"

    def __enter__(self) -> FaultyFileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
