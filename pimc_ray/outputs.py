"""Output folders that are either complete or untouched.

A run writes every file under a hidden staging folder inside its output folder; :meth:`Staging.commit` moves
them in place and writes ``run.json`` last. If anything fails before that, the staging folder is removed (and
the output folder too, if the run created it), so a failed run leaves nothing behind. ``run.json`` carries the
run's key (a hash of everything that decides the outputs); :func:`finished_run` lets a rerun with the same key
skip the work.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pimc_ray.cog import COGWriter
from pimc_ray.errors import AllCloudError
from pimc_ray.series import SeriesSpec

RUN_JSON = "run.json"


def write_windows(
    results: Iterable[tuple[int, Any]],
    write: Callable[[int, Any], int],
    writers: Sequence[COGWriter],
    spec: SeriesSpec,
) -> int:
    """Feed finished windows to ``write`` and publish the writers; returns the valid pixel count.

    Args:
        results: ``(task index, window result)`` pairs, e.g. from :func:`pimc_ray.runner.run_windows`.
        write: writes one result into the writers and returns how many of its pixels hold valid output.
        writers: every writer ``write`` uses; all are closed (converted to COGs) at the end, or aborted if
            anything fails.
        spec: the run's series spec (for the error message).

    Raises:
        AllCloudError: no pixel of the area has enough cloud-free observations.
    """
    try:
        pixels = sum(write(index, result) for index, result in results)
        if pixels == 0:
            raise AllCloudError(
                f"no AOI pixel has {spec.timegrid.min_valid} or more cloud-free observations between "
                f"{spec.dates.start} and {spec.dates.end}; widen the dates or lower --min-valid"
            )
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    return pixels


@dataclass(frozen=True)
class RunSummary:
    """What a run produced."""

    out_dir: Path
    files: list[Path]
    pixels: int
    """Pixels with a valid output."""
    skipped: bool = False
    """True when an identical finished run was found and nothing was done."""

    @classmethod
    def of_finished(cls, out_dir: Path, meta: Mapping[str, Any]) -> RunSummary:
        files = sorted(p for p in out_dir.iterdir() if not p.name.startswith(".") and p.name != RUN_JSON)
        return cls(out_dir, files, int(meta["pixels"]), skipped=True)


def finished_run(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The ``run.json`` of a completed run with this key in ``out_dir``, else None."""
    path = out_dir / RUN_JSON
    if not path.exists():
        return None
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta if meta.get("key") == key else None


class Staging:
    """A hidden staging folder inside ``out_dir`` (created on entering the context)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.root: Path | None = None
        self._created_out_dir = False

    def __enter__(self) -> Staging:
        self._created_out_dir = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(dir=self.out_dir, prefix=".staging-"))
        return self

    def path(self, name: str) -> Path:
        """Where to write output ``name`` while the run is in progress."""
        assert self.root is not None, "use Staging as a context manager"
        return self.root / name

    def commit(self, meta: Mapping[str, Any]) -> list[Path]:
        """Move every staged entry into ``out_dir`` (replacing older ones), then write ``run.json``."""
        assert self.root is not None
        moved = []
        for entry in sorted(self.root.iterdir()):
            target = self.out_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
            moved.append(target)
        tmp = self.root / f".{RUN_JSON}"
        tmp.write_text(json.dumps(meta, indent=2, default=str))
        os.replace(tmp, self.out_dir / RUN_JSON)
        return moved

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
        if exc_type is not None and self._created_out_dir and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()
