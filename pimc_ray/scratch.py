"""Each process's scratch folder, for files that exist only until they are published.

Every temporary folder the library makes (a tile before it is published, an indices run's rasters, a snapshot
being written, a checkpoint being staged) lives under ``$TMPDIR/pimc-scratch/<pid>/``. A process killed mid-run
(``ray job stop``, a lost node, the OOM killer) leaves its folder behind; the next process that asks for its own
removes the folders of processes that no longer exist, so a rerun cleans up after a kill.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["SCRATCH", "scratch_dir", "temporary_folder"]

#: The folder under ``$TMPDIR`` that holds one scratch folder per process.
SCRATCH = "pimc-scratch"


def scratch_dir() -> Path:
    """This process's scratch folder, made on first use (the leftovers of dead processes removed first)."""
    return _scratch_dir(os.getpid(), tempfile.gettempdir())


@functools.cache
def _scratch_dir(pid: int, tmp: str) -> Path:  # keyed by pid: a forked child gets its own
    root = Path(tmp) / SCRATCH
    root.mkdir(exist_ok=True)
    for folder in root.iterdir():
        if folder.name.isdigit() and not _process_exists(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
    mine = root / str(pid)
    mine.mkdir(exist_ok=True)
    atexit.register(shutil.rmtree, mine, ignore_errors=True)
    return mine


def temporary_folder(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """``tempfile.TemporaryDirectory`` in this process's scratch folder."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir=scratch_dir())


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
