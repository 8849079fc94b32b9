"""A minimal paging STAC API (stdlib http.server) for testing the client's paging and retries.

It serves given items through ``POST /search`` in pages of ``page_size`` with STAC API ``next`` links (as Earth
Search and Planetary Computer do; the local rustac server returns everything at once), filters by collection
only, and answers the first ``fail_first`` search requests with HTTP 429 or 503. With ``number_matched`` it
reports the count of matching items as ``numberMatched`` (as Earth Search does).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
]


class PagingStacApi:
    def __init__(
        self,
        items: Sequence[dict[str, Any]],
        *,
        page_size: int = 10,
        fail_first: int = 0,
        status=429,
        number_matched: bool = False,
    ):
        self.items, self.page_size, self.fail_first, self.status = list(items), page_size, fail_first, status
        self.number_matched = number_matched
        self.search_requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") in ("", "/conformance"):
                    links = [{"rel": "search", "href": f"{api.url}/search", "type": "application/geo+json",
                              "method": "POST"}, {"rel": "self", "href": f"{api.url}/"}]  # fmt: skip
                    self._send(200, {"type": "Catalog", "id": "paging", "description": "test", "stac_version":
                                     "1.0.0", "conformsTo": CONFORMANCE, "links": links})  # fmt: skip
                else:
                    self._send(404, {"code": "NotFound"})

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                api.search_requests += 1
                if api.search_requests <= api.fail_first:
                    self._send(api.status, {"code": "TooManyRequests"})
                    return
                wanted = set(body.get("collections") or [])
                matching = [i for i in api.items if not wanted or i.get("collection") in wanted]
                start = int(body.get("token", 0))
                page = matching[start : start + min(api.page_size, int(body.get("limit") or api.page_size))]
                links = []
                if start + api.page_size < len(matching):
                    links.append({"rel": "next", "href": f"{api.url}/search", "method": "POST",
                                  "body": {**body, "token": start + api.page_size}})  # fmt: skip
                counted = {"numberMatched": len(matching)} if api.number_matched else {}
                self._send(200, {"type": "FeatureCollection", "features": page, "links": links, **counted})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PagingStacApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
