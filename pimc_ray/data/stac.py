"""Search: AOI + dates + filters -> STAC items (metadata only, no pixels).

``search_items`` queries a STAC API with pystac-client, follows paging, retries on 429/5xx/timeouts with
backoff, filters on cloud cover server-side (CQL2) where the API supports it and client-side otherwise, and returns
plain item dicts. :func:`save_snapshot` / :func:`load_snapshot` freeze a search, so later stages and reruns use exactly
the same items: as newline-delimited JSON, or as stac-geoparquet (a ``.parquet`` snapshot: columnar and compressed,
for large searches), at a local path or a URI (:mod:`pimc_ray.storage`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pimc_ray.data.aoi import AOI, load_aoi
from pimc_ray.errors import (
    CatalogUnreachableError,
    InvalidConfigError,
    InvalidDateRangeError,
    NoItemsFoundError,
    UnknownCatalogError,
)
from pimc_ray.scratch import temporary_folder
from pimc_ray.storage import (
    UriLike,
    exists,
    is_local,
    join_uri,
    local_copy,
    normalize_uri,
    read_bytes,
    write_bytes,
    write_file,
)

__all__ = [
    "GEOPARQUET_SUFFIX",
    "RETRY_STATUSES",
    "count_items",
    "dumps_ndjson",
    "epsg_of",
    "frozen_search",
    "group_by_epsg",
    "item_epsg",
    "load_snapshot",
    "open_client",
    "save_snapshot",
    "search_items",
    "DateRange",
    "Item",
]

logger = logging.getLogger(__name__)

Item = dict[str, Any]

#: HTTP statuses worth retrying.
RETRY_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class DateRange:
    """A closed range of calendar dates (UTC)."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise InvalidDateRangeError(
                f"the date range is reversed: start {self.start} is after end {self.end}; swap them"
            )

    @classmethod
    def parse(cls, start: str | dt.date, end: str | dt.date) -> DateRange:
        """Parse ISO dates (``2022-01-01``)."""
        return cls(_parse_date(start, "start"), _parse_date(end, "end"))

    @property
    def datetime_interval(self) -> str:
        """The STAC API ``datetime`` parameter covering whole days."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59Z"

    @property
    def days(self) -> int:
        """Number of days covered, ends included."""
        return (self.end - self.start).days + 1


def _parse_date(value: str | dt.date, name: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError as err:
        raise InvalidDateRangeError(
            f"the {name} date {value!r} is not an ISO date; write it as YYYY-MM-DD (e.g. 2022-01-01)"
        ) from err


def _retrying_stac_io(timeout: float, retries: int) -> Any:
    """A pystac-client StacApiIO whose HTTP session retries with exponential backoff."""
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(
        total=retries,
        connect=min(retries, 2),  # a refused connection rarely heals within seconds: fail fast
        backoff_factor=0.5,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET", "POST"}),
        respect_retry_after_header=True,
    )
    return StacApiIO(timeout=timeout, max_retries=retry)


def open_client(stac_url: str, *, timeout: float = 30.0, retries: int = 5) -> Any:
    """Open a STAC API with retries and a timeout on every request.

    Raises:
        CatalogUnreachableError: one line: it cannot be reached, did not answer in time, or is not a STAC API.
    """
    import pystac
    import pystac_client
    import requests

    try:
        # the timeout again: Client.open resets the given StacApiIO's timeout to its own (None: wait forever)
        return pystac_client.Client.open(
            stac_url, stac_io=_retrying_stac_io(timeout, retries), timeout=timeout
        )
    except (requests.RequestException, pystac_client.exceptions.APIError, OSError) as err:
        if _timed_out(err):
            raise _no_answer(stac_url, timeout) from err
        raise CatalogUnreachableError(
            f"cannot reach the STAC API at {stac_url} ({type(err).__name__}); check the URL and your network, "
            "or start the local one with `pimc stac serve`"
        ) from err
    except (pystac_client.errors.ClientTypeError, pystac.STACError, ValueError, LookupError, TypeError,
            AttributeError) as err:  # fmt: skip
        raise CatalogUnreachableError(
            f"{stac_url} is not a STAC API (its root is not a STAC catalog: {type(err).__name__}); check the URL, "
            "which should be the API's root, e.g. https://earth-search.aws.element84.com/v1"
        ) from err


def _timed_out(err: BaseException) -> bool:
    """Whether a request failed because the server did not answer in time (requests and pystac-client wrap the
    timeout in their own errors, the latter keeping only its text)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, TimeoutError) or "timed out" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _no_answer(stac_url: str, timeout: float) -> CatalogUnreachableError:
    return CatalogUnreachableError(
        f"the STAC API at {stac_url} accepted the connection but did not answer within {timeout:g} s (after "
        "retries); it is overloaded or stalled: retry later, or check the URL"
    )


@contextmanager
def _api_errors(stac_url: str, timeout: float, doing: str) -> Iterator[None]:
    """A search's failures as one :class:`CatalogUnreachableError` naming what failed (a stalled API apart)."""
    import pystac_client
    import requests

    try:
        yield
    except (requests.RequestException, pystac_client.exceptions.APIError, OSError) as err:
        if _timed_out(err):
            raise _no_answer(stac_url, timeout) from err
        raise CatalogUnreachableError(
            f"the STAC API at {stac_url} failed while {doing} ({err}); retry later or check the collection id"
        ) from err


def search_items(
    aoi: Any,
    dates: DateRange,
    *,
    stac_url: str,
    collection: str = "sentinel-2-l2a",
    max_cloud_cover: float | None = None,
    timeout: float = 30.0,
    retries: int = 5,
) -> list[Item]:
    """Items of ``collection`` intersecting ``aoi`` within ``dates``, sorted by datetime then id.

    Args:
        aoi: anything :func:`pimc_ray.data.aoi.load_aoi` accepts.
        dates: the date range.
        stac_url: root URL of a STAC API.
        collection: collection id.
        max_cloud_cover: keep items with ``eo:cloud_cover`` at most this (percent); server-side CQL2 filter where
            the API conforms to it, client-side otherwise.
        timeout: seconds per HTTP request.
        retries: retries per request on 429, 5xx and timeouts, with exponential backoff.

    Raises:
        CatalogUnreachableError: the API cannot be reached or fails.
        NoItemsFoundError: nothing matches.
    """
    area: AOI = load_aoi(aoi)
    client = open_client(stac_url, timeout=timeout, retries=retries)
    kwargs, server_filter = _search_kwargs(client, area, dates, collection, max_cloud_cover)
    with _api_errors(stac_url, timeout, f"searching {collection!r}"):
        items = [dict(item) for item in client.search(**kwargs).items_as_dicts()]
    if max_cloud_cover is not None and not server_filter:
        items = [i for i in items if i.get("properties", {}).get("eo:cloud_cover", 0.0) <= max_cloud_cover]
    if not items:
        cloud = f" with eo:cloud_cover <= {max_cloud_cover}" if max_cloud_cover is not None else ""
        raise NoItemsFoundError(
            f"no {collection!r} items at {stac_url} intersect the AOI {area.bounds} between {dates.start} and "
            f"{dates.end}{cloud}; widen the dates or the AOI, or check the collection id"
        )
    items.sort(key=lambda i: (i["properties"].get("datetime") or "", i["id"]))
    logger.info("found %d %s items for %s, %s", len(items), collection, area.bounds, dates.datetime_interval)
    return items


def _search_kwargs(
    client: Any, area: AOI, dates: DateRange, collection: str, max_cloud_cover: float | None
) -> tuple[dict[str, Any], bool]:
    """The search's parameters, and whether the cloud filter is applied by the server (CQL2) or must be applied
    to the items afterwards."""
    kwargs: dict[str, Any] = {
        "collections": [collection],
        "intersects": area.__geo_interface__,
        "datetime": dates.datetime_interval,
    }
    server_filter = max_cloud_cover is not None and bool(client.conforms_to("FILTER"))
    if server_filter and max_cloud_cover is not None:
        kwargs["filter"] = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, float(max_cloud_cover)]}
        kwargs["filter_lang"] = "cql2-json"
    return kwargs, server_filter


def count_items(
    aoi: Any,
    dates: DateRange,
    *,
    stac_url: str,
    collection: str = "sentinel-2-l2a",
    max_cloud_cover: float | None = None,
    timeout: float = 30.0,
    retries: int = 5,
) -> int | None:
    """How many items :func:`search_items` would return, from one request of one item: the ``numberMatched`` (or
    ``context.matched``) the API reports. None when it reports none (the local rustac server does not), or when
    ``max_cloud_cover`` could only be applied client-side.

    Raises:
        CatalogUnreachableError: the API cannot be reached or fails.
    """
    area: AOI = load_aoi(aoi)
    client = open_client(stac_url, timeout=timeout, retries=retries)
    kwargs, server_filter = _search_kwargs(client, area, dates, collection, max_cloud_cover)
    if max_cloud_cover is not None and not server_filter:
        return None
    with _api_errors(stac_url, timeout, f"counting {collection!r} items"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "numberMatched ... not in response": None says it
        matched = client.search(**kwargs, limit=1).matched()
    return None if matched is None else int(matched)


def frozen_search(
    aoi: Any,
    dates: DateRange,
    *,
    stac_url: str,
    collection: str = "sentinel-2-l2a",
    max_cloud_cover: float | None = None,
    snapshot: UriLike | None = None,
) -> list[Item]:
    """Items of a run: read from ``snapshot`` (a local path or a URI) when it exists (no search), else searched
    (:func:`search_items`) and frozen there when a snapshot is given, so that reruns see exactly the same items.

    Raises:
        InvalidConfigError: the snapshot is a folder, or not a snapshot of STAC items.
    """
    if snapshot is not None and is_local(snapshot) and Path(normalize_uri(snapshot)).is_dir():
        raise InvalidConfigError(
            f"--snapshot {snapshot} is a folder; give a file path in it, e.g. {join_uri(snapshot, 'items.ndjson')}"
        )
    if snapshot is not None and exists(snapshot):
        items = load_snapshot(snapshot)
        if not items:
            raise InvalidConfigError(
                f"--snapshot {snapshot} holds no items; delete it to search the catalog again, or give another"
            )
        logger.info("using %d items frozen in %s (no search)", len(items), snapshot)
        return items
    items = search_items(
        aoi, dates, stac_url=stac_url, collection=collection, max_cloud_cover=max_cloud_cover
    )
    if snapshot is not None:
        save_snapshot(items, snapshot)
    return items


def dumps_ndjson(items: Iterable[Mapping[str, Any]]) -> bytes:
    """Items as newline-delimited JSON (one compact line per item, keys sorted): the snapshot format."""
    return "".join(json.dumps(i, sort_keys=True, separators=(",", ":")) + "\n" for i in items).encode()


#: Suffix of a stac-geoparquet snapshot; any other is newline-delimited JSON.
GEOPARQUET_SUFFIX = ".parquet"


def _is_geoparquet(uri: UriLike) -> bool:
    return Path(normalize_uri(uri)).suffix.lower() == GEOPARQUET_SUFFIX


def _rustac() -> Any:
    """The rustac module (stac-geoparquet), or an install hint."""
    try:
        import rustac
    except ImportError as err:
        raise InvalidConfigError(
            "a .parquet snapshot (stac-geoparquet) needs rustac: pip install 'pimc-ray[geoparquet]', or freeze the "
            "items as .ndjson"
        ) from err
    return rustac


def save_snapshot(items: Iterable[Mapping[str, Any]], uri: UriLike) -> str:
    """Write items to a local path or a URI, atomically; returns it normalised.

    The suffix decides the format: ``.parquet`` is stac-geoparquet (written by rustac), anything else
    newline-delimited JSON (:func:`dumps_ndjson`).

    Raises:
        InvalidConfigError: a ``.parquet`` snapshot without rustac installed.
        StorageError: the location cannot be written.
    """
    if not _is_geoparquet(uri):
        return write_bytes(dumps_ndjson(items), uri)
    rustac = _rustac()
    with temporary_folder("pimc-snapshot-") as tmp:
        local = Path(tmp, "items.parquet")
        rustac.write_sync(str(local), [dict(i) for i in items])
        return write_file(local, uri)


def load_snapshot(uri: UriLike) -> list[Item]:
    """Read items written by :func:`save_snapshot` from a local path or a URI.

    A stac-geoparquet snapshot gives back the items' values; its timestamps are written out as rustac writes them
    (``2022-01-03T10:17:56.393Z`` for ``2022-01-03T10:17:56.393000Z``: the same instants).

    Raises:
        InvalidConfigError: a ``.parquet`` snapshot without rustac installed.
        StorageError: nothing at ``uri``, or it cannot be read.
    """
    if not _is_geoparquet(uri):
        items = []
        for number, line in enumerate(read_bytes(uri).splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError as err:
                raise _not_a_snapshot(uri, f"line {number} is not JSON: {err}") from err
    else:
        rustac = _rustac()
        with local_copy(uri) as local:
            try:
                features = rustac.read_sync(str(local))["features"]
            except Exception as err:  # rustac raises its own errors for any unreadable file  # noqa: BLE001
                raise _not_a_snapshot(uri, f"not stac-geoparquet: {err}") from err
        items = json.loads(json.dumps(features))  # plain JSON values: lists, not the tuples of a bbox
    for number, item in enumerate(items, 1):
        if not (isinstance(item, dict) and "id" in item and isinstance(item.get("properties"), dict)):
            raise _not_a_snapshot(uri, f"item {number} is not a STAC item (no id or properties)")
    return items


def _not_a_snapshot(uri: UriLike, why: str) -> InvalidConfigError:
    return InvalidConfigError(
        f"--snapshot {uri} is not a snapshot of STAC items ({why}); give the file a run wrote, or a new path to "
        "search the catalog again and freeze its items there"
    )


def group_by_epsg(items: Sequence[Mapping[str, Any]]) -> dict[int, list[Item]]:
    """Items grouped by their projection's EPSG code (``proj:epsg`` or ``proj:code``)."""
    groups: dict[int, list[Item]] = {}
    for item in items:
        groups.setdefault(item_epsg(item), []).append(dict(item))
    return dict(sorted(groups.items()))


def epsg_of(properties: Mapping[str, Any]) -> int | None:
    """The EPSG code in an item's properties: ``proj:epsg``, or an ``EPSG:`` ``proj:code`` (pystac >= 1.12 rewrites
    the first into the second); None when neither is there."""
    if properties.get("proj:epsg") is not None:
        return int(properties["proj:epsg"])
    code = properties.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        return int(code.split(":", 1)[1])
    return None


def item_epsg(item: Mapping[str, Any]) -> int:
    """EPSG code of an item's native grid.

    Raises:
        UnknownCatalogError: the item carries no EPSG code.
    """
    epsg = epsg_of(item.get("properties", {}))
    if epsg is None:
        raise UnknownCatalogError(
            f"item {item.get('id')!r} has neither proj:epsg nor an EPSG proj:code; the catalog must carry the "
            "projection extension"
        )
    return epsg
