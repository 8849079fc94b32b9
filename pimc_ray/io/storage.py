"""Where outputs go: a local folder or an S3-compatible bucket, behind one small interface.

``open_store("out/run1")`` and ``open_store("s3://bucket/prefix")`` give a :class:`Store` whose keys are
relative paths (``tiles/32N_0071_0492/embedding.tif``). Every put is atomic: a local file is written under a
temporary name and renamed; an S3 object appears whole when its upload (single or multipart) completes.

S3 settings come from the environment, the way boto3 and GDAL read them, and are never logged:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, and the endpoint of a non-AWS service in ``AWS_ENDPOINT_URL``
(``http://127.0.0.1:8333``). :func:`gdal_s3_env` derives the GDAL options (``AWS_S3_ENDPOINT``,
``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``) so GDAL reads back what boto3 wrote through ``/vsis3/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pimc_ray.errors import StorageError

#: The media type of a cloud-optimised GeoTIFF, as STAC assets and uploads name it.
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: Media types of what a run writes, by file suffix.
_CONTENT_TYPES = {
    ".tif": COG_MEDIA_TYPE,
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".ndjson": "application/x-ndjson",
    ".vrt": "application/xml",
    ".parquet": "application/vnd.apache.parquet",
    ".safetensors": "application/octet-stream",
}


def content_type(key: str) -> str:
    """The media type an object is uploaded with, from its key's suffix (``application/octet-stream`` when
    unknown): browsers, tile servers and STAC tools read it."""
    return _CONTENT_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")


__all__ = [
    "COG_MEDIA_TYPE",
    "LocalStore",
    "S3Store",
    "Store",
    "StorageError",
    "content_type",
    "gdal_s3_env",
    "normalize_location",
    "open_store",
]


class Store(ABC):
    """A place to put output files under relative keys."""

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
    def uri(self, key: str) -> str:
        """A URI of ``key`` for STAC hrefs and users (``file:///...`` or ``s3://...``)."""

    @abstractmethod
    def gdal_path(self, key: str) -> str:
        """A path GDAL opens (a local path or ``/vsis3/bucket/key``)."""

    def get_json(self, key: str) -> Any:
        data = self.get_bytes(key)
        return None if data is None else json.loads(data)

    def put_json(self, obj: Any, key: str) -> None:
        self.put_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), key)


class LocalStore(Store):
    """A folder on a local or shared file system."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise StorageError(f"key {key!r} escapes the output folder {self.root}")
        return path

    def put_file(self, local: Path, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(local, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, data: bytes, key: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str) -> bytes | None:
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

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
    """A prefix in an S3-compatible bucket (AWS, SeaweedFS, MinIO...)."""

    def __init__(self, bucket: str, prefix: str) -> None:
        import boto3
        import botocore.config
        import botocore.exceptions

        self.bucket, self.prefix = bucket, prefix.strip("/")
        config = botocore.config.Config(
            retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}
        )
        self.client = boto3.client("s3", config=config)  # endpoint and credentials from the environment
        try:
            self.client.head_bucket(Bucket=bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            raise StorageError(
                f"cannot use s3://{bucket}/ ({type(err).__name__}: {err}); check AWS_ENDPOINT_URL, the credentials "
                "in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and that the bucket exists"
            ) from err

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, local: Path, key: str) -> None:
        # multipart above 8 MB: the object appears whole when the upload completes
        extra = {"ContentType": content_type(key)}
        self.client.upload_file(str(local), self.bucket, self._key(key), ExtraArgs=extra)

    def put_bytes(self, data: bytes, key: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type(key)
        )

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
        start = len(self._key(""))
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        return sorted(obj["Key"][start:] for page in pages for obj in page.get("Contents", []))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def gdal_path(self, key: str) -> str:
        return f"/vsis3/{self.bucket}/{self._key(key)}"


def normalize_location(location: str | Path) -> str:
    """A local folder as an absolute path, or an ``s3://bucket/prefix`` URI as given: where a run's outputs go.

    Raises:
        StorageError: an S3 URI without a bucket, a local path that is a file, or an unsupported scheme.
    """
    text = str(location)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"{text!r} names no bucket; write s3://<bucket>/<prefix>")
        return text
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else text)
        if path.exists() and not path.is_dir():
            raise StorageError(f"--out {path} exists and is not a folder; pass a folder path")
        return str(path.resolve())
    raise StorageError(f"--out {text}: unsupported location; use a local folder or s3://<bucket>/<prefix>")


def open_store(location: str | Path) -> Store:
    """A :class:`Store` for a local path or an ``s3://bucket/prefix`` URI (see :func:`normalize_location`)."""
    text = normalize_location(location)
    if text.startswith("s3://"):
        parsed = urlparse(text)
        return S3Store(parsed.netloc, parsed.path)
    return LocalStore(Path(text))


def gdal_s3_env() -> dict[str, str]:
    """GDAL configuration for ``/vsis3/`` matching boto3's environment (custom endpoint, path-style, http)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return {}
    parsed = urlparse(endpoint)
    return {
        "AWS_S3_ENDPOINT": parsed.netloc,
        "AWS_HTTPS": "YES" if parsed.scheme == "https" else "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }
