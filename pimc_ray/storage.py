"""Storage over URIs: local paths, ``file://`` URIs and ``s3://`` buckets, behind one interface.

Every path a job takes (models, heads, labels, snapshots, outputs, pretraining exports) is a URI read and written
here, so a Ray worker on any node reads ``s3://bucket/models/enc`` the way it reads a folder on its own disk. Two
ways in:

* a :class:`Store` for a folder or a prefix: ``open_store("out/run1")``, ``open_store("s3://bucket/run1")``; its
  keys are relative paths (``tiles/32N_0071_0492/embedding.tif``) that cannot leave it;
* URI helpers for single objects and folders: :func:`read_bytes` (or :func:`read_bytes_or_none`),
  :func:`write_bytes`, :func:`write_file`, :func:`local_copy`, :func:`exists`, :func:`join_uri`, :func:`split_uri`,
  :func:`gdal_uri`, and :func:`staged_folder`, which publishes a folder written locally (a checkpoint, a head) at
  a URI.

Every put is atomic: a local file is written under a temporary name and renamed; an object appears whole when its
upload (single or multipart) completes. Every upload carries its Content-Type (:func:`content_type`).

Object stores go through obstore (Rust's ``object_store``), chosen over boto3 and fsspec + s3fs by measurement
(docs/benchmarks.md, "Storage layer"). Local files stay plain files: GDAL writes and reads them, and a rename is
the atomic put there. ``gs://`` and ``az://`` are recognised and refused with a :class:`StorageError` that says
so: obstore serves both, and enabling one is a :class:`Store` like :class:`S3Store` over its obstore class, its
entry in :func:`_open`, and its GDAL prefix.

S3 settings come from the environment, as boto3 and GDAL read them, and are never logged: ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_S3``) points at an S3-compatible service (SeaweedFS, MinIO: ``http://127.0.0.1:8333``;
path-style requests there), ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``) sign
requests, else an instance or pod role does; the region is ``AWS_REGION`` or ``AWS_DEFAULT_REGION``, ``us-east-1``
when neither is set (what SeaweedFS and MinIO accept). :func:`gdal_s3_env` derives the GDAL options
(``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``) so GDAL reads through ``/vsis3/`` what was put here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from pimc_ray.errors import StorageError
from pimc_ray.parallel import in_order
from pimc_ray.scratch import temporary_folder

if TYPE_CHECKING:
    import obstore.store

__all__ = [
    "COG_MEDIA_TYPE",
    "LocalStore",
    "S3Store",
    "Store",
    "StorageError",
    "UriLike",
    "content_type",
    "exists",
    "gdal_s3_env",
    "gdal_uri",
    "is_local",
    "join_uri",
    "local_copy",
    "normalize_location",
    "normalize_uri",
    "open_store",
    "read_bytes",
    "read_bytes_or_none",
    "split_uri",
    "staged_folder",
    "write_bytes",
    "write_file",
]

#: A local path (``str`` or :class:`~pathlib.Path`), a ``file://`` URI or an ``s3://bucket/key`` URI.
UriLike = str | os.PathLike[str]

#: The media type of a cloud-optimised GeoTIFF, as STAC assets and uploads name it.
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: Media types of what a run writes, by file suffix.
_CONTENT_TYPES = {
    ".tif": COG_MEDIA_TYPE,
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".ndjson": "application/x-ndjson",
    ".vrt": "application/xml",
    ".gpkg": "application/geopackage+sqlite3",  # the GTI mosaics (.gti.gpkg)
    ".parquet": "application/vnd.apache.parquet",
    ".safetensors": "application/octet-stream",
    ".png": "image/png",  # quicklooks, a run's status map
    ".svg": "image/svg+xml",  # a class legend
}
#: Object stores obstore serves that this version does not set up yet, by scheme.
_NOT_CONFIGURED = {"gs": "Google Cloud Storage", "az": "Azure Blob Storage"}
#: What to check when an S3 bucket cannot be used (never the values: they may be secrets).
_S3_HINT = (
    "check AWS_ENDPOINT_URL, the credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "and that the bucket exists"
)


def content_type(key: str) -> str:
    """The media type an object is uploaded with, from its key's suffix (``application/octet-stream`` when
    unknown): browsers, tile servers and STAC tools read it."""
    return _CONTENT_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")


# --- URIs ---------------------------------------------------------------------------------------------------


def normalize_uri(uri: UriLike) -> str:
    """A URI in the one form the rest of the package uses: a local path or ``file://`` URI as an absolute path,
    ``s3://bucket/key`` without a trailing slash.

    Raises:
        StorageError: an S3 URI without a bucket, ``gs://`` or ``az://`` (not configured), or another scheme.
    """
    text = os.fspath(uri)
    if "://" not in text:
        return str(Path(text).expanduser().resolve())
    parsed = urlparse(text)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{text}: a file:// URI names a local path (file:///abs/path), not a host")
        return str(Path(url2pathname(parsed.path)).resolve())
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{text!r} names no bucket; write s3://<bucket>/<key>")
        key = parsed.path.strip("/")
        return f"s3://{parsed.netloc}/{key}" if key else f"s3://{parsed.netloc}"
    if parsed.scheme in _NOT_CONFIGURED:
        raise StorageError(
            f"{text}: {parsed.scheme}:// ({_NOT_CONFIGURED[parsed.scheme]}) is not configured in this version of "
            "pimc-ray; use a local path, file:// or s3://<bucket>/<key>"
        )
    raise StorageError(f"{text}: unsupported location; use a local path, file:// or s3://<bucket>/<key>")


def is_local(uri: UriLike) -> bool:
    """True for a local path or ``file://`` URI (after :func:`normalize_uri`)."""
    return not normalize_uri(uri).startswith("s3://")


def normalize_location(location: UriLike, *, option: str = "--out") -> str:
    """A folder (or prefix) as :func:`normalize_uri` writes it: where a run's outputs, a checkpoint or a head go.

    Raises:
        StorageError: what :func:`normalize_uri` refuses, or a local path that is a file; the message starts with
            ``option`` (the command-line option that named the location, if any).
    """
    named = f"{option} " if option else ""
    try:
        text = normalize_uri(location)
    except StorageError as err:
        raise StorageError(f"{named}{err}") from err
    if not text.startswith("s3://"):
        path = Path(text)
        for folder in (path, *path.parents):
            if folder.exists() and not folder.is_dir():
                where = "" if folder == path else f" is inside {folder}, which"
                raise StorageError(f"{named}{text}{where} is a file, not a folder; pass a folder path")
    return text


def split_uri(uri: UriLike) -> tuple[str, str]:
    """``(location, name)`` of a file or object: ``s3://b/models/enc/config.json`` gives ``("s3://b/models/enc",
    "config.json")``, ``/data/items.ndjson`` gives ``("/data", "items.ndjson")``.

    Raises:
        StorageError: a bucket without a key, or what :func:`normalize_uri` refuses.
    """
    text = normalize_uri(uri)
    if text.startswith("s3://"):
        location, _, name = text.rpartition("/")
        if location == "s3:/":
            raise StorageError(f"{text} names a bucket, not an object; write s3://<bucket>/<key>")
        return location, name
    path = Path(text)
    return str(path.parent), path.name


def join_uri(base: UriLike, *parts: str) -> str:
    """``base`` (a folder or prefix) joined with relative ``parts``: ``join_uri("s3://b/enc", "rp", "config.json")``
    is ``s3://b/enc/rp/config.json``."""
    text = normalize_uri(base)
    if text.startswith("s3://"):
        return "/".join([text, *(p.strip("/") for p in parts)])
    return str(Path(text, *parts))


def _open(location: UriLike, *, check: bool) -> Store:
    """The :class:`Store` of a normalised location; ``check``: fail now when an S3 bucket cannot be used."""
    text = normalize_uri(location)
    if text.startswith("s3://"):
        bucket, _, prefix = text.removeprefix("s3://").partition("/")
        return S3Store(bucket, prefix, check=check)
    return LocalStore(Path(text))


def open_store(location: UriLike) -> Store:
    """A :class:`Store` for a local folder or an ``s3://bucket/prefix`` URI (see :func:`normalize_location`).

    Raises:
        StorageError: a bad location, or an S3 bucket that cannot be listed (endpoint, credentials, bucket).
    """
    return _open(normalize_location(location), check=True)


def read_bytes(uri: UriLike) -> bytes:
    """The content of a file or object.

    Raises:
        StorageError: naming ``uri`` when there is nothing there or it cannot be read.
    """
    data = read_bytes_or_none(uri)
    if data is None:
        raise StorageError(f"{os.fspath(uri)} does not exist; check the path (and for s3://, the bucket)")
    return data


def read_bytes_or_none(uri: UriLike) -> bytes | None:
    """The content of a file or object, None when there is none.

    Raises:
        StorageError: naming ``uri`` when it is there but cannot be read, or its store cannot be reached.
    """
    location, name = split_uri(uri)
    return _open(location, check=False).get_bytes(name)


def write_bytes(data: bytes, uri: UriLike) -> str:
    """Write ``data`` to a file or object, atomically and with its Content-Type; returns the normalised URI."""
    location, name = split_uri(uri)
    _open(location, check=False).put_bytes(data, name)
    return join_uri(location, name)


def write_file(local: Path, uri: UriLike) -> str:
    """Copy a local file to a file or object, atomically and with its Content-Type; returns the normalised URI."""
    location, name = split_uri(uri)
    _open(location, check=False).put_file(local, name)
    return join_uri(location, name)


@contextmanager
def local_copy(uri: UriLike) -> Iterator[Path]:
    """A local file with the content of ``uri``: the file itself when it is local, else a temporary copy (removed
    when the ``with`` block ends), for libraries that read only local files.

    Raises:
        StorageError: naming ``uri`` when there is nothing there or it cannot be read.
    """
    if is_local(uri):
        path = Path(normalize_uri(uri))
        if not path.is_file():
            raise StorageError(f"{os.fspath(uri)} does not exist; check the path")
        yield path
        return
    with temporary_folder("pimc-copy-") as tmp:
        path = Path(tmp, split_uri(uri)[1])
        path.write_bytes(read_bytes(uri))
        yield path


def exists(uri: UriLike) -> bool:
    """True when a file or object is at ``uri``."""
    location, name = split_uri(uri)
    return _open(location, check=False).exists(name)


def gdal_uri(uri: UriLike) -> str:
    """A path GDAL opens for a file or object: a local path, or ``/vsis3/bucket/key`` (with :func:`gdal_s3_env`)."""
    location, name = split_uri(uri)
    return _open(location, check=False).gdal_path(name)


@contextmanager
def staged_folder(location: UriLike, *, last: Sequence[str] = (), replace: bool = True) -> Iterator[Path]:
    """A local folder to fill, published at ``location`` when the ``with`` block ends without an error.

    With ``replace``, a local location is replaced whole: the folder is filled beside it and renamed into place (a
    folder there before is removed). Otherwise, and always under an S3 prefix, every file is put on its own, each
    appearing whole, the files named in ``last`` (relative paths) after all others, so that a reader who looks for
    those first (a checkpoint's ``config.json``) finds the rest; files already there that the folder does not hold
    are left. Nothing is published when the block raises.
    """
    target = normalize_location(location, option="")
    if replace and not target.startswith("s3://"):
        folder = Path(target)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
        try:
            yield tmp
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    store = _open(target, check=False)
    with temporary_folder("pimc-stage-") as staging:
        yield Path(staging)
        keys = sorted(p.relative_to(staging).as_posix() for p in Path(staging).rglob("*") if p.is_file())
        for key in sorted(keys, key=lambda k: k in last):  # a stable sort: the last ones at the end
            store.put_file(Path(staging, key), key)


# --- stores -------------------------------------------------------------------------------------------------


class Store(ABC):
    """A place to put files under relative keys."""

    @abstractmethod
    def put_file(self, local: Path, key: str) -> None:
        """Copy a local file to ``key``, atomically."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes | None:
        """The content at ``key``, or None when there is none."""

    @abstractmethod
    def put_bytes(self, data: bytes, key: str) -> None:
        """Write ``data`` to ``key``, atomically."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (a folder: ``status/``), sorted; temporary files left out."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True when something is at ``key``."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """A URI of ``key`` for STAC hrefs and users (``file:///...`` or ``s3://...``)."""

    @abstractmethod
    def gdal_path(self, key: str) -> str:
        """A path GDAL opens (a local path or ``/vsis3/bucket/key``)."""

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def get_json_many(self, keys: Sequence[str], *, threads: int = 32) -> Iterator[Any]:
        """:meth:`get_json` of every key, ``threads`` requests at a time, in order (a run's status objects and
        items: 100,000 small objects are minutes one by one from an object store, seconds this way)."""
        return in_order(self.get_json, keys, threads)

    def put_json(self, obj: Any, key: str) -> None:
        self.put_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), key)


class LocalStore(Store):
    """A folder on a local or shared file system."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise StorageError(f"key {key!r} escapes the folder {self.root}")
        return path

    def put_file(self, local: Path, key: str) -> None:
        with self._staged(key) as tmp:
            shutil.copyfile(local, tmp)

    def put_bytes(self, data: bytes, key: str) -> None:
        with self._staged(key) as tmp:
            tmp.write_bytes(data)

    @contextmanager
    def _staged(self, key: str) -> Iterator[Path]:
        """A temporary file beside ``key`` (``.<name>.<random>.tmp``) to fill, renamed to ``key`` at the end."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return path.read_bytes() if path.is_file() else None
        except OSError as err:
            raise StorageError(f"cannot read {path} ({err})") from err

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove ``key``, and the folders it leaves empty (as object stores have no empty folders)."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == self.root or self.root not in folder.parents:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): stop here
                break

    def list(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in folder.rglob("*") if p.is_file())
        return sorted(
            k for k in keys if not Path(k).name.startswith(".")
        )  # ".<name>.<random>.tmp": in flight

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def gdal_path(self, key: str) -> str:
        return str(self._path(key))


class S3Store(Store):
    """A prefix in an S3-compatible bucket (AWS, SeaweedFS, MinIO...), through obstore.

    Args:
        bucket: the bucket.
        prefix: the folder inside it that keys are relative to.
        check: list the prefix now, so that an unreachable endpoint, bad credentials or a missing bucket fail here
            with a :class:`StorageError` that says what to check.
    """

    def __init__(self, bucket: str, prefix: str = "", *, check: bool = True) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.store = _obstore_s3(bucket, self.prefix)
        if check:
            import obstore

            with self._errors("list", ""):
                next(iter(obstore.list(self.store, None, chunk_size=1)), None)

    def _key(self, key: str) -> str:
        """``key`` checked to stay inside the prefix."""
        if key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"key {key!r} escapes {self.uri('')}")
        return key

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """The library's errors as a :class:`StorageError` naming the object and what to check."""
        from obstore.exceptions import BaseError

        try:
            yield
        except (BaseError, OSError) as err:
            reason = (str(err).splitlines() or [""])[0]
            raise StorageError(
                f"cannot {action} {self.uri(key)} ({type(err).__name__}: {reason}); {_S3_HINT}"
            ) from err

    def _put(self, data: bytes | Path, key: str) -> None:
        import obstore

        # above 5 MB a multipart upload: the object appears whole when it completes
        with self._errors("write", key):
            obstore.put(self.store, self._key(key), data, attributes={"Content-Type": content_type(key)})

    def put_file(self, local: Path, key: str) -> None:
        self._put(Path(local), key)

    def put_bytes(self, data: bytes, key: str) -> None:
        self._put(data, key)

    def get_bytes(self, key: str) -> bytes | None:
        import obstore

        with self._errors("read", key):
            try:
                return bytes(obstore.get(self.store, self._key(key)).bytes())
            except FileNotFoundError:
                return None

    def exists(self, key: str) -> bool:
        import obstore

        with self._errors("look up", key):
            try:
                obstore.head(self.store, self._key(key))
            except FileNotFoundError:
                return False
        return True

    def delete(self, key: str) -> None:
        import obstore

        with self._errors("delete", key):
            obstore.delete(self.store, self._key(key))

    def list(self, prefix: str) -> list[str]:
        import obstore

        with self._errors("list", prefix):
            return sorted(
                meta["path"]
                for batch in obstore.list(self.store, self._key(prefix) or None)
                for meta in batch
            )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def gdal_path(self, key: str) -> str:
        return f"/vsis3/{self.bucket}/{self._full(key)}"

    def _full(self, key: str) -> str:
        return "/".join(p for p in (self.prefix, key) if p)

    def __repr__(self) -> str:
        return f"S3Store({self.uri('')!r})"


def _obstore_s3(bucket: str, prefix: str) -> obstore.store.S3Store:
    """An obstore S3 client for ``bucket``/``prefix`` set up from the environment (see the module's docstring).

    obstore reads the credentials from the environment itself; they never pass through here. Requests are retried
    8 times within a minute, at least a second apart and backing off up to 8 s: a store restarting (seconds) is
    waited for, while one that stays unreachable fails within the minute, not obstore's default 3 minutes (its
    default backoff, from 0.1 s, gave up after less than a second of outage).
    """
    from obstore.store import S3Store as ObstoreS3

    env = os.environ
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    retry: Any = {
        "max_retries": 8,
        "retry_timeout": timedelta(seconds=60),
        "backoff": {"init_backoff": timedelta(seconds=1), "max_backoff": timedelta(seconds=8), "base": 2},
    }
    client: Any = {"allow_http": bool(endpoint and endpoint.startswith("http://")), "timeout": "120s"}
    if endpoint:  # an S3-compatible service: path-style requests (http://host:port/bucket/key)
        return ObstoreS3(
            bucket,
            prefix=prefix or None,
            region=region,
            endpoint=endpoint,
            virtual_hosted_style_request=False,
            client_options=client,
            retry_config=retry,
        )
    return ObstoreS3(bucket, prefix=prefix or None, region=region, client_options=client, retry_config=retry)


def gdal_s3_env() -> dict[str, str]:
    """GDAL configuration for ``/vsis3/`` matching the store's environment (custom endpoint, path-style, http)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return {}
    parsed = urlparse(endpoint)
    return {
        "AWS_S3_ENDPOINT": parsed.netloc,
        "AWS_HTTPS": "YES" if parsed.scheme == "https" else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
