"""A local STAC API on loopback: ``rustac serve`` over a stac-geoparquet file.

Public STAC APIs are unreachable on the machines this project is built on, so the demo and the tests search a
real STAC API server (rustac's, DuckDB backend, full CQL2 ``filter`` support) started by the project itself.

DuckDB fetches its extensions from the internet on first use, which hangs offline; the PyPI wheels
``duckdb-extension-{spatial,icu,parquet}`` carry them, and :func:`prepare_duckdb_home` copies them where DuckDB
looks (``$HOME/.duckdb/extensions/<version>/<platform>``), with ``HOME`` pointed at a folder of ours so nothing is
written to the user's home.

Use :class:`LocalStacServer` as a context manager (tests, scripts) or ``pimc stac serve`` (the demo).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path

from pimc_ray.errors import PimcError
from pimc_ray.local._service import LocalService, check_port_free, free_port, wait_until_up

__all__ = [
    "DUCKDB_EXTENSIONS",
    "DUCKDB_VERSION",
    "items_to_geoparquet",
    "prepare_duckdb_home",
    "LocalStacServer",
]

logger = logging.getLogger(__name__)

DUCKDB_VERSION = "v1.5.5"
DUCKDB_EXTENSIONS = ("spatial", "icu", "parquet")


def _rustac_executable() -> str:
    """The ``rustac`` CLI installed beside this interpreter (the venv's ``bin``), else on PATH."""
    candidate = Path(sys.executable).parent / "rustac"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("rustac")
    if found is None:
        raise PimcError(
            "the `rustac` command is not installed: install the local extra, pip install 'pimc-ray[local]' "
            "(make install does)"
        )
    return found


def prepare_duckdb_home(home: Path) -> Path:
    """Copy DuckDB's extensions from their PyPI wheels into ``home`` so DuckDB never downloads them."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    dest = home / ".duckdb" / "extensions" / DUCKDB_VERSION / "linux_amd64"
    dest.mkdir(parents=True, exist_ok=True)
    for name in DUCKDB_EXTENSIONS:
        src = (
            purelib / f"duckdb_extension_{name}" / "extensions" / DUCKDB_VERSION / f"{name}.duckdb_extension"
        )
        if not src.exists():
            raise PimcError(f"DuckDB extension wheel for {name!r} is missing ({src}); run `make install`")
        target = dest / src.name
        if not target.exists():
            shutil.copyfile(src, target)
    return home


def items_to_geoparquet(items_ndjson: Path, parquet: Path) -> Path:
    """Translate newline-delimited STAC items into one stac-geoparquet file (``rustac translate``)."""
    if parquet.exists() and parquet.stat().st_mtime >= items_ndjson.stat().st_mtime:
        return parquet
    tmp = parquet.with_suffix(".parquet.tmp")
    subprocess.run(
        [_rustac_executable(), "translate", str(items_ndjson), str(tmp), "-o", "parquet"],
        check=True,
        capture_output=True,
    )
    tmp.replace(parquet)
    return parquet


class LocalStacServer(LocalService):
    """``rustac serve`` over an archive's items, on loopback, for as long as the context is open.

    Args:
        items_ndjson: newline-delimited STAC items (all collections in one file).
        workdir: folder for the geoparquet file and DuckDB's home; defaults to the items' folder.
        port: TCP port; a free one is picked when None.
    """

    def __init__(
        self, items_ndjson: Path | str, *, workdir: Path | str | None = None, port: int | None = None
    ):
        self.items_ndjson = Path(items_ndjson).resolve()
        if not self.items_ndjson.exists():
            raise PimcError(
                f"no STAC items at {self.items_ndjson}; build the sample archive first (`pimc archive build`)"
            )
        self.workdir = Path(workdir) if workdir is not None else self.items_ndjson.parent / ".stac-server"
        self.port = port if port is not None else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Root URL of the STAC API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalStacServer:
        """Start the server and wait until it answers (about half a second).

        Raises:
            PimcError: the port is in use, or the server did not come up.
        """
        check_port_free(self.port)
        self.workdir.mkdir(parents=True, exist_ok=True)
        home = prepare_duckdb_home(self.workdir / "duckhome")
        parquet = items_to_geoparquet(self.items_ndjson, self.workdir / "items.parquet")
        env = {**os.environ, "HOME": str(home)}
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [_rustac_executable(), "serve", "--addr", f"127.0.0.1:{self.port}", str(parquet)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._log = log
        try:
            wait_until_up(f"{self.url}/collections", process=self.process)
        except PimcError:
            self.stop()
            raise
        logger.info("local STAC API up at %s (%s)", self.url, parquet)
        return self

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def collections(self) -> list[str]:
        """Ids of the collections the server knows."""
        with urllib.request.urlopen(f"{self.url}/collections", timeout=5) as response:
            return [c["id"] for c in json.load(response)["collections"]]
