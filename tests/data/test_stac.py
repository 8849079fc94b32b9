"""STAC search against the local STAC API (rustac serve) over the sample archive."""

import datetime as dt
import json
import time
import uuid

import pytest

from pimc_ray.data.stac import (
    DateRange,
    count_items,
    frozen_search,
    group_by_epsg,
    load_snapshot,
    save_snapshot,
    search_items,
)
from pimc_ray.errors import (
    CatalogUnreachableError,
    InvalidConfigError,
    InvalidDateRangeError,
    NoItemsFoundError,
)
from pimc_ray.local import free_port
from pimc_ray.local.archive import tile_info
from tests.specs import TEST_SPEC

YEAR = DateRange.parse("2022-01-01", "2022-12-31")


def tile_bbox(tile_id: str) -> list[float]:
    from pyproj import Transformer

    t = tile_info(TEST_SPEC, tile_id)
    tr = Transformer.from_crs(t.epsg, 4326, always_xy=True)
    xmin, ymin, xmax, ymax = t.bounds
    (x0, x1), (y0, y1) = tr.transform([xmin + 100, xmax - 100], [ymin + 100, ymax - 100])
    return [x0, y0, x1, y1]


def test_search_finds_every_acquisition_of_the_tile(stac_api, sample_archive):
    items = search_items(tile_bbox("32TQR"), YEAR, stac_url=stac_api.url)
    expected = {i["id"] for i in sample_archive.read_items("sentinel-2-l2a") if "_32TQR_" in i["id"]}
    assert {i["id"] for i in items} == expected
    assert len(items) == 37
    datetimes = [i["properties"]["datetime"] for i in items]
    assert datetimes == sorted(datetimes)


def test_cloud_filter_matches_client_side_filtering(stac_api):
    everything = search_items(tile_bbox("32TQS"), YEAR, stac_url=stac_api.url)
    clear = search_items(tile_bbox("32TQS"), YEAR, stac_url=stac_api.url, max_cloud_cover=20)
    assert 0 < len(clear) < len(everything)
    assert {i["id"] for i in clear} == {
        i["id"] for i in everything if i["properties"]["eo:cloud_cover"] <= 20
    }


def test_two_zone_aoi_returns_both_zones(stac_api):
    a, c = tile_bbox("32TQS"), tile_bbox("33TTL")
    items = search_items([a[0], a[1], c[2], c[3]], YEAR, stac_url=stac_api.url)
    assert sorted(group_by_epsg(items)) == [32632, 32633]


def test_no_items_is_a_clear_error(stac_api):
    with pytest.raises(NoItemsFoundError, match="widen the dates"):
        search_items(tile_bbox("32TQR"), DateRange.parse("2019-01-01", "2019-02-01"), stac_url=stac_api.url)
    with pytest.raises(NoItemsFoundError):
        search_items([-60.0, -10.0, -59.9, -9.9], YEAR, stac_url=stac_api.url)


def test_unreachable_api_fails_fast_with_a_hint():
    t0 = time.monotonic()
    with pytest.raises(CatalogUnreachableError, match="cannot reach the STAC API"):
        search_items([11, 45, 11.1, 45.1], YEAR, stac_url=f"http://127.0.0.1:{free_port()}", retries=1)
    assert time.monotonic() - t0 < 10


def test_reversed_or_bad_dates():
    with pytest.raises(InvalidDateRangeError, match="reversed"):
        DateRange.parse("2022-12-31", "2022-01-01")
    with pytest.raises(InvalidDateRangeError, match="YYYY-MM-DD"):
        DateRange.parse("31/12/2022", "2023-01-01")


def instants(item: dict) -> dict:
    """An item with its timestamps parsed (stac-geoparquet writes ``.393000Z`` as ``.393Z``: the same instant)."""
    props = {
        k: dt.datetime.fromisoformat(v) if k in ("datetime", "created", "updated") else v
        for k, v in item["properties"].items()
    }
    return {**item, "properties": props}


@pytest.mark.parametrize("suffix", [".ndjson", ".parquet"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_snapshot_round_trip(stac_api, tmp_path, request, suffix, where):
    items = search_items(tile_bbox("33TTL"), YEAR, stac_url=stac_api.url)
    if where == "s3":
        request.getfixturevalue("s3")
        uri = f"s3://pimc-test/snapshots-{uuid.uuid4().hex[:8]}/items{suffix}"
    else:
        uri = f"file://{tmp_path}/snap/items{suffix}"
    saved = save_snapshot(items, uri)
    back = load_snapshot(saved)
    assert load_snapshot(uri) == back and [i["id"] for i in back] == [i["id"] for i in items]
    if suffix == ".ndjson":
        assert back == items
    else:
        assert [instants(i) for i in back] == [instants(i) for i in items]
    if where == "local":
        assert [p.name for p in (tmp_path / "snap").iterdir()] == [f"items{suffix}"]
    # a rerun reads the snapshot instead of searching
    offline = f"http://127.0.0.1:{free_port()}"
    assert frozen_search(tile_bbox("33TTL"), YEAR, stac_url=offline, snapshot=uri) == back


def test_paging_is_followed_and_429_is_retried(sample_archive):
    from tests.paging_api import PagingStacApi

    items = sample_archive.read_items("sentinel-2-l2a")
    with PagingStacApi(items, page_size=7, fail_first=2) as api:
        found = search_items([11.8, 45.4, 12.1, 45.6], YEAR, stac_url=api.url, retries=3)
        assert {i["id"] for i in found} == {i["id"] for i in items}  # all 111 items over 16 pages
        assert api.search_requests == 2 + 16
    with PagingStacApi(items, fail_first=10, status=503) as api:
        with pytest.raises(CatalogUnreachableError, match="failed while searching"):
            search_items([11.8, 45.4, 12.1, 45.6], YEAR, stac_url=api.url, retries=2)


def test_snapshot_is_used_instead_of_searching(stac_api, tmp_path):
    snap = tmp_path / "items.ndjson"
    items = frozen_search(tile_bbox("32TQR"), YEAR, stac_url=stac_api.url, snapshot=snap)
    assert snap.exists() and load_snapshot(snap) == items
    offline = f"http://127.0.0.1:{free_port()}"
    assert (
        frozen_search(tile_bbox("32TQR"), YEAR, stac_url=offline, snapshot=snap) == items
    )  # no request made


class _Answering:
    """A loopback HTTP server that answers every request with ``body`` (``stall``: accepts, never answers;
    ``stall_after``: answers that many requests, then stalls)."""

    def __init__(
        self,
        body: bytes = b"",
        *,
        content_type: str = "text/html",
        stall: bool = False,
        stall_after: int | None = None,
    ) -> None:
        import socket
        import threading

        self.body, self.content_type, self.stall, self.stall_after = body, content_type, stall, stall_after
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.stall or self.stall_after == 0:
                self.held.append(conn)  # keep it open, say nothing
                continue
            if self.stall_after is not None:
                self.stall_after -= 1
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: {self.content_type}\r\nContent-Length: {len(self.body)}\r\n"
            conn.sendall(head.encode() + b"Connection: close\r\n\r\n" + self.body)
            conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_an_api_that_never_answers_times_out():
    """``Client.open(url, stac_io=...)`` resets the StacApiIO's timeout unless it is passed again."""
    server = _Answering(stall=True)
    try:
        t0 = time.monotonic()
        with pytest.raises(CatalogUnreachableError, match="did not answer within 1 s"):
            search_items("11,45,11.1,45.1", DateRange.parse("2022-01-01", "2022-02-01"), stac_url=server.url,
                         timeout=1.0, retries=1)  # fmt: skip
        assert time.monotonic() - t0 < 20
    finally:
        server.close()


@pytest.mark.parametrize("ask", [search_items, count_items], ids=["search", "count"])
def test_an_api_whose_search_never_answers_times_out(ask):
    """The landing page answers, the search stalls: counting items (what ``pimc run plan`` asks) was reported
    as a failed request, not as a stalled API."""
    server = _Answering(content_type="application/json", stall_after=1)
    server.body = json.dumps(
        {
            "type": "Catalog",
            "id": "stalls",
            "stac_version": "1.0.0",
            "description": "answers its landing page, then nothing",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
            ],
            "links": [
                {"rel": "self", "href": server.url, "type": "application/json"},
                {
                    "rel": "search",
                    "href": f"{server.url}/search",
                    "type": "application/geo+json",
                    "method": "GET",
                },
            ],
        }
    ).encode()
    try:
        with pytest.raises(CatalogUnreachableError, match="did not answer within 1 s"):
            ask("11,45,11.1,45.1", DateRange.parse("2022-01-01", "2022-02-01"), stac_url=server.url,
                timeout=1.0, retries=1)  # fmt: skip
    finally:
        server.close()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Welcome to nginx!</body></html>", "text/html"),
        (b'{"hello": "world"}', "application/json"),
        (b"[1, 2, 3]", "application/json"),
    ],
)
def test_a_url_that_is_not_a_stac_api_is_one_clear_error(body, content_type):
    server = _Answering(body, content_type=content_type)
    try:
        with pytest.raises(CatalogUnreachableError, match="is not a STAC API"):
            search_items("11,45,11.1,45.1", DateRange.parse("2022-01-01", "2022-02-01"), stac_url=server.url,
                         retries=0)  # fmt: skip
    finally:
        server.close()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json\n", "line 1 is not JSON"),
        ('{"id": "a", "properties": {}}\n{"id": "b", "prop', "line 2 is not JSON"),  # truncated
        ('{"type": "FeatureCollection"}\n', "item 1 is not a STAC item"),
        ("\n", "holds no items"),
        (None, "is a folder"),
    ],
)
def test_a_bad_snapshot_is_one_clear_error_not_a_traceback(tmp_path, content, words):
    snapshot = tmp_path / "items.ndjson"
    if content is None:
        snapshot.mkdir()
    else:
        snapshot.write_text(content)
    with pytest.raises(InvalidConfigError, match=words):
        frozen_search("11,45,11.1,45.1", YEAR, stac_url="http://127.0.0.1:9", snapshot=snapshot)
